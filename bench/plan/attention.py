"""Attention as a CUDA run computes it, for plans traced on a CPU build of torch.

A plan for a GPU runs its fake steps on the CPU device (a CPU build of torch cannot make CUDA fake tensors),
where SDPA with dropout would take the math path and keep b x h x s x s attention probabilities. On a GPU, SDPA
and FlashAttention-2 run a fused kernel that keeps none of that: forward saves the query, key, value, output
and a float32 log-sum-exp per row; backward allocates the three input gradients and a float32 accumulator
for the query's. `fused_attention` allocates exactly those tensors, from their shapes, and is registered with
transformers' attention interface for the plan's model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

NAME = "bench_plan_fused"


def _fused_function() -> Any:
    import torch

    class FusedAttention(torch.autograd.Function):
        """The tensors a fused attention kernel allocates and keeps, with shapes only (values do not matter)."""

        @staticmethod
        def forward(ctx: Any, query: Any, key: Any, value: Any) -> Any:
            batch, heads, length, _ = query.shape
            output = torch.empty(batch, heads, length, value.shape[-1], dtype=query.dtype, device=query.device)
            logsumexp = torch.empty(batch, heads, length, dtype=torch.float32, device=query.device)
            ctx.save_for_backward(query, key, value, output, logsumexp)
            return output

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> tuple[Any, Any, Any]:
            query, key, value, _, _ = ctx.saved_tensors
            accumulator = torch.empty(query.shape, dtype=torch.float32, device=query.device)
            grads = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
            del accumulator
            return grads

    return FusedAttention


def fused_attention(module: torch.nn.Module, query: Any, key: Any, value: Any, attention_mask: Any,
                    scaling: float | None = None,
                    dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-interface signature: [b, h, s, d] in, [b, s, h, d] out, no weights returned."""
    output = _fused_function().apply(query, key, value)
    return output.transpose(1, 2).contiguous(), None


def use_fused_attention(model: torch.nn.Module) -> bool:
    """Make the model attend with `fused_attention` where it attends through transformers' interface with SDPA
    (its default); False where it uses something else (eager attention, LongLoRA's S²-Attn), left as it is."""
    from transformers import AttentionInterface

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, fused_attention)
    base.set_attn_implementation(NAME)
    return True
