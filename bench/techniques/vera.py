"""VeRA (Kopiczko et al. 2023, arXiv 2310.11454): one pair of frozen random matrices A (r x d_in) and B (d_out x r),
shared by every adapted layer, and per layer two trained vectors, d (r) and b (d_out): ΔW = Λ_b B Λ_d A. A rank of
256 costs a few hundred trained values per layer. peft's `VeraConfig` sizes the shared pair to the largest adapted
layer and slices it for smaller ones; the pair is saved with the adapter (`save_projection`), so it reloads alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.techniques.base import Option, Technique

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig
    from bench.plan.analytic import Census


class VeRA(Technique):
    def peft_config(self, method: MethodConfig, *, task_type: str, targets: str | list[str],
                    modules_to_save: list[str], initialise: bool, **extra: Any) -> Any:
        from peft import VeraConfig

        return VeraConfig(task_type=task_type, r=method.r, target_modules=targets, vera_dropout=method.dropout,
                          bias="vera_only" if method.bias == "lora_only" else method.bias,
                          d_initial=method.options["d_initial"], projection_prng_key=method.options["seed"],
                          save_projection=True, modules_to_save=list(modules_to_save), **extra)

    def check_adapter_fits(self, method: MethodConfig, model: torch.nn.Module, *, targets: str | list[str],
                           skip: list[str]) -> None:
        """Nothing to refuse: r is the shared projections' rank (256 in the paper), not bounded by a layer's."""

    def adapter_params(self, method: MethodConfig, *, d_in: int, d_out: int) -> int:
        """The two scaling vectors, d (r) and b (d_out)."""
        return method.r + d_out

    def adapter_buffer_bytes(self, method: MethodConfig, census: Census) -> int:
        """The shared random pair, in fp32, sized to the largest adapted layer."""
        return 4 * method.r * (census.largest_in + census.largest_out)

    def extra_activations(self, method: MethodConfig, census: Census, *, tokens: int, element: int) -> int:
        """Per adapted layer, the [tokens, r] product between the two projections and the slices of the pair, in
        the compute dtype (an upper bound by 10-15 % of what autograd saved on a tiny BERT at r=256)."""
        return element * method.r * (tokens * census.targeted + census.targeted_inputs + census.targeted_outputs)


TECHNIQUE = VeRA(name="vera", label="VeRA", summary="shared frozen random A and B, two trained vectors per layer",
                 parent="lora", knobs=frozenset({"r", "dropout", "target_modules", "bias"}),
                 options=(Option("d_initial", 0.1, "the start of the trained vector d (the paper's: 0.1)", above=0),
                          Option("seed", 0, "the seed of the shared random projections", kind=int)))
