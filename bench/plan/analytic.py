"""Peak training memory predicted before any weight loads: the analytic second opinion beside
`bench plan`'s traced one (bench.plan). Every classification run logs it as `mem/predicted_peak_bytes` and,
after training, how far off it was as `mem/analytic_error_pct`.

The model's parameters are counted on the meta device (no memory), then priced by how the technique holds
them; what differs between techniques comes from each one's module in `bench.techniques` (`adapter_params`,
`quantized_bytes`, `extra_activations`), and a technique that cannot size its adapter from shapes (a generic peft
method) gets no estimate:
- weights: the dtype the run picks (16-bit where native, else fp32); QLoRA's and LoftQ's base linears in
  4 bits plus their block constants, QA-LoRA's in 4 bits plus a scale and a zero point per group; LoRA
  adapters (DoRA: and a magnitude per output; QA-LoRA: A over d_in/g pooled inputs) and the trained copy of
  the head in fp32;
- gradients: one per trainable weight, in its dtype;
- optimizer state: torch-optimi AdamW keeps two moments per trainable weight in its dtype, and a Kahan
  compensation buffer too when that dtype is 16-bit;
- activations: what autograd saves per layer for b sequences of s tokens, after Korthikanti et al. 2022
  generalised to element size e, MLP width i and the attention kernel in use (`_activations`); checked
  tensor by tensor against autograd's saved tensors on MiniLM (exact for full fine-tuning on CPU). The
  sequence is the full `data.max_length`, the worst case of dynamic padding. Frozen layers save a little
  less (7 % on MiniLM), so for LoRA and QLoRA the term is an upper bound. DoRA and HQQ (QA-LoRA) save
  more (their `extra_activations`).
The peak is their sum, which assumes gradients and activations coexist; a tensor count, so compare it
with the tensor peak a run measures (`mem/tensor_peak_bytes`, bench.measure.monitor.tensors), on CPU and CUDA alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.config import MethodConfig

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class Estimate:
    """Predicted bytes by part; `peak_bytes` is their sum."""

    weights_bytes: int
    trainable_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes


@dataclass(frozen=True)
class Census:
    """Parameter counts of the model to train, by how the technique treats them (what its accounting hooks in
    `bench.techniques` read)."""

    total: int  # every parameter of the base model
    head: int  # the classification head (trained in full; a fp32 copy under LoRA/QLoRA)
    body_linear_weights: list[int]  # numel of each body nn.Linear weight (4-bit under QLoRA)
    lora: int | None  # adapter parameters (LoRA: r * (in + out) per targeted linear); None: the technique cannot say
    bias: int  # biases that `method.bias` makes trainable
    targeted: int = 0  # how many linears the adapter targets
    targeted_weights: int = 0  # numel of the targeted linears' weights (DoRA materialises B·A for each)
    targeted_inputs: int = 0  # sum of the targeted linears' input widths
    targeted_outputs: int = 0  # sum of the targeted linears' output widths
    largest_in: int = 0  # the widest input among the targeted linears (VeRA's shared projections span it)
    largest_out: int = 0  # the widest output among them


def _census(config: PretrainedConfig, method: MethodConfig, trust_remote_code: bool) -> Census:
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForSequenceClassification

    from bench.models.load import skeleton_heads
    from bench.techniques.targets import resolve_targets, select_modules

    with init_empty_weights():
        skeleton = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    heads = set(skeleton_heads(skeleton))
    linears = {name: m for name, m in skeleton.named_modules()
               if isinstance(m, torch.nn.Linear) and name.split(".")[0] not in heads}
    targets = [] if not method.uses_adapter else select_modules(
        list(linears), resolve_targets(method.target_modules, config.model_type))
    biases = {"all": [m.bias for m in linears.values()], "lora_only": [linears[n].bias for n in targets],
              "none": []}[method.bias if method.uses_adapter else "none"]
    adapters = [method.technique.adapter_params(method, d_in=linears[n].in_features, d_out=linears[n].out_features)
                for n in targets]
    return Census(total=sum(p.numel() for p in skeleton.parameters()),
                  head=sum(p.numel() for n, p in skeleton.named_parameters() if n.split(".")[0] in heads),
                  body_linear_weights=[m.weight.numel() for m in linears.values()],
                  lora=None if None in adapters else sum(adapters),
                  bias=sum(b.numel() for b in biases if b is not None),
                  targeted=len(targets), targeted_weights=sum(linears[n].weight.numel() for n in targets),
                  targeted_inputs=sum(linears[n].in_features for n in targets),
                  targeted_outputs=sum(linears[n].out_features for n in targets),
                  largest_in=max((linears[n].in_features for n in targets), default=0),
                  largest_out=max((linears[n].out_features for n in targets), default=0))


def _attention_kind(config: PretrainedConfig, device: torch.device) -> str:
    """eager (scores kept in the compute dtype), math (CPU SDPA with dropout: kept in fp32), or fused (none)."""
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation == "eager":
        return "eager"
    dropout = next((getattr(config, key) for key in ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")
                    if getattr(config, key, None) is not None), 0.0)
    return "math" if device.type == "cpu" and dropout > 0 else "fused"


def _activations(config: PretrainedConfig, *, batch: int, seq: int, element: int, device: torch.device) -> int:
    """Bytes autograd keeps for the backward pass, all layers (see the module docstring). Per token and
    layer: the inputs of the four linear maps, e*(3h + i); the GELU input, e*i; the norms' and dropouts'
    tensors, 4*e*h; the attention's q, k and v, 3*a_e*h. Per sequence, the attention scores, a*s^2 each:
    eager keeps softmax, dropout mask and dropout output (2e+1); CPU SDPA with dropout runs the math
    path in fp32 (3 x 4 bytes, and q, k, v in fp32 too); fused CUDA kernels keep none."""
    h, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    width = next((getattr(config, k) for k in ("intermediate_size", "hidden_dim", "ffn_dim", "n_inner")
                  if getattr(config, k, None)), 4 * h)
    kind = _attention_kind(config, device)
    attention_element = 4 if kind == "math" else element
    score_bytes = {"eager": 2 * element + 1, "math": 3 * 4, "fused": 0}[kind]
    per_token = element * (7 * h + 2 * width) + 3 * attention_element * h
    per_layer = batch * seq * per_token + batch * heads * seq * seq * score_bytes
    return layers * per_layer + batch * seq * 2 * element * h  # + the embeddings' norm and dropout


def estimate_peak(*, config: PretrainedConfig, method: MethodConfig, device: torch.device, batch_size: int,
                  seq_len: int,
                  trust_remote_code: bool = False) -> Estimate | None:
    """Predict the training peak of `method` on this model config, batch and sequence length; None for a technique
    whose adapter's size cannot be told from shapes (an arbitrary peft method)."""
    from bench.models.precision import run_dtypes

    weights_dtype, compute_dtype = run_dtypes(method, device)
    size, element = weights_dtype.itemsize, compute_dtype.itemsize
    census = _census(config, method, trust_remote_code)
    technique = method.technique
    if census.lora is None:
        return None
    if not technique.uses_adapter:
        weights = trainable = census.total * size
    else:
        trainable = 4 * (census.lora + census.head + census.bias)  # adapters, head copy, biases: fp32
        weights = census.total * size + trainable - census.bias * size  # trained biases are upcast in place
        weights += technique.adapter_buffer_bytes(method, census)
        # what quantizing the body's linears changes: their storage as the base holds them minus 16-bit storage
        weights += sum(technique.quantized_bytes(method, numel=n, size=size) - n * size
                       for n in census.body_linear_weights)
    kahan = not technique.uses_adapter and size < 4  # optimi adds a compensation buffer on 16-bit weights
    optimizer = trainable * (3 if kahan else 2)
    activations = _activations(config, batch=batch_size, seq=seq_len, element=element, device=device)
    # what the technique saves beyond LoRA (counted from autograd's saved tensors on a tiny BERT)
    activations += technique.extra_activations(method, census, tokens=batch_size * seq_len, element=element)
    return Estimate(weights_bytes=weights, trainable_bytes=trainable, grads_bytes=trainable, optimizer_bytes=optimizer,
                    activations_bytes=activations)
