"""What a technique is to the rest of bench: a `Technique` whose defaults are plain LoRA's behaviour, and the
options a technique may declare for itself (`Option`).

A technique's module (`bench/techniques/<name>.py`) defines one `TECHNIQUE`: this class, or a subclass that
overrides the hooks where it differs. The generic code asks it and never compares its name: the config its
knobs and options, `bench.models.build` how to load, quantize, prepare and adapt the base, the training loop
the rates of its own modules, the run what it measures after training, `bench plan` what to count from shapes,
the report and the MLflow UI its label and what it is compared with.

Cheap to import: nothing here (nor in any technique's module) imports torch, peft or bitsandbytes before a hook
runs; the implementations that need them live in `bench.techniques.impl`. Types from higher layers are named
under TYPE_CHECKING only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig
    from bench.models.build import BuiltModel
    from bench.plan.analytic import Census

# MethodConfig fields that change a technique's result, by family; the rest are inherited unused.
LORA_KNOBS = frozenset({"r", "alpha", "dropout", "target_modules", "bias"})
QUANT_KNOBS = frozenset({"quant_type", "double_quant", "compute_dtype"})
VARIANT_KNOBS = frozenset({"svd_iters", "loftq_iter", "group_size", "attn_group_ratio", "embed_norm_lr"})
ALL_KNOBS = LORA_KNOBS | QUANT_KNOBS | VARIANT_KNOBS  # `method.options` is counted apart (only when not empty)

BASES = ("16-bit", "nf4", "int4-affine")  # how a technique holds the pretrained weights it adapts
BASE_PACKAGES = {"nf4": "bitsandbytes", "int4-affine": "hqq"}  # the library each quantized base needs


@dataclass(frozen=True)
class Option:
    """A knob a technique declares for itself, set as `method.options.<name>=<value>` (no config field needed)."""

    name: str
    default: Any
    meaning: str  # one line: what it changes
    kind: type = float  # int, float, str or bool; an int is a valid float
    above: float | None = None  # the value must be greater than this
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        """`lr_ratio (float > 0, default 16): B's rate over A's`."""
        kind = f"one of {', '.join(map(str, self.choices))}" if self.choices else self.kind.__name__
        bound = f" > {self.above:g}" if self.above is not None else ""
        return f"{self.name} ({kind}{bound}, default {self.default!r}): {self.meaning}"

    def check(self, value: Any) -> Any:
        """`value` when valid, else a ConfigError naming it and what is valid."""
        if self.choices and value not in self.choices:
            raise ConfigError(f"method.options.{self.name}={value!r} is not valid; choose one of: "
                              f"{', '.join(map(str, self.choices))}")
        kinds = (int, float) if self.kind is float else (self.kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and self.kind is not bool):
            raise ConfigError(f"method.options.{self.name}={value!r} is not valid; it must be {kind_name(self.kind)}"
                              f" ({self.describe()})")
        if self.above is not None and value <= self.above:
            raise ConfigError(f"method.options.{self.name}={value!r} is not valid; it must be > {self.above:g}")
        return value


def kind_name(kind: type) -> str:
    """`an int`, `a float`: a value's type as an error names it."""
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"


def unknown_options(technique: str, names: list[str], valid: list[str]) -> ConfigError:
    """The one-line error for options a technique does not take, listing those it does."""
    given = ", ".join(f"method.options.{name}" for name in names)
    return ConfigError(f"method={technique} has no option{'s' if len(names) > 1 else ''} {given}; "
                       f"its options: {'; '.join(valid) or 'none'}")


@dataclass(frozen=True)
class Technique:
    """One way of fine-tuning, as the rest of bench needs to know it. The defaults are plain LoRA's."""

    name: str  # the `method=` choice, and its YAML file conf/method/<name>.yaml
    label: str  # how a sentence names it: `LoRA`, `QA-LoRA`, `Full fine-tuning`
    summary: str  # what it changes, in a few words (`bench --help`, the README)
    parent: str | None = None  # the technique it modifies: the report's variant table sets it beside its parent
    compared_with: str | None = None  # whom the report's step-time sentences hold it against; default: the parent
    base: str = "16-bit"  # one of BASES: 16-bit, nf4 (bitsandbytes NF4), int4-affine (HQQ, a scale and zero per group)
    knobs: frozenset[str] = LORA_KNOBS  # MethodConfig fields besides lr and dtype that change its result (the hash)
    options: tuple[Option, ...] = ()  # its own knobs, as `method.options.<name>`
    title_options: tuple[str, ...] = ()  # options that tell its runs apart at a glance: run names, report rows
    uses_adapter: bool = True  # False: every weight trains (full fine-tuning), nothing is adapted
    baseline: bool = False  # the tuned table gives every technique's difference against it (`vs_<name>`)
    converted_on_save: bool = False  # PiSSA/OLoRA change the base: the adapter ships as a plain LoRA delta
    causal_lm_only: bool = False  # LongLoRA's S²-Attn needs a causal mask
    mixes_packed_examples: bool = False  # its attention crosses a packed row's examples (S²-Attn's shifted groups)
    initialises_from_values: bool = False  # its start depends on the weights' values, which a plan's skeleton lacks
    needs_architecture: bool = False  # its checks need the model's config: one that cannot be read fails at once
    order: int = 100  # where NAMES lists it (and so its plot colour); ties by name, after the first ten

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"technique {self.name}: base {self.base!r} is not one of {', '.join(BASES)}")
        if self.compared_with is None and self.parent is not None:
            object.__setattr__(self, "compared_with", self.parent)

    @property
    def quantized(self) -> bool:
        """Whether the base's linear layers are held in 4 bits."""
        return self.base != "16-bit"

    @property
    def package(self) -> str | None:
        """The library its base needs (bitsandbytes, hqq), None for a 16-bit base."""
        return BASE_PACKAGES.get(self.base)

    # --- the config -------------------------------------------------------------------------------------------
    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """`method.options` checked against the declared options, with their defaults filled in (what the config
        hash counts: empty for a technique without options, so its hash is what it was before options existed)."""
        declared = {option.name: option for option in self.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise unknown_options(self.name, unknown, [option.describe() for option in self.options])
        return {name: option.check(given.get(name, option.default)) for name, option in declared.items()}

    def title(self, options: Mapping[str, Any]) -> str:
        """The technique as run names show it: `lora`; with its `title_options`, `peft-loha`."""
        return "-".join([self.name, *(str(options[name]).lower() for name in self.title_options if name in options)])

    # --- before any weight loads (bench.models.build.check_method_supported, check_method_fits) ----------------
    def check_task(self, method: MethodConfig, task: str) -> None:
        """Refuse a task the technique cannot train, before any data or weights load."""
        if self.causal_lm_only and task != "causal_lm":
            raise ConfigError(f"method={self.name} needs a causal LM (task=causal_lm, e.g. model=smollm2-135m); "
                              f"task={task!r} is not one")

    def check_model_type(self, method: MethodConfig, *, model_type: str, task: str) -> None:
        """Refuse an architecture the technique does not support (LongLoRA: Llama-style decoders)."""

    def advise(self, method: MethodConfig, *, max_length: int) -> None:
        """Warn (stderr) about settings that run but are unlikely to mean what the user wants."""

    def select_targets(self, method: MethodConfig, model: torch.nn.Module, *, targets: str | list[str],
                       skip: list[str]) -> str | list[str]:
        """The adapter's targets on this model (a skeleton on the meta device, or the loaded base), checked;
        QA-LoRA names them before quantizing and checks its groups tile them."""
        return targets

    def check_adapter_fits(self, method: MethodConfig, model: torch.nn.Module, *, targets: str | list[str],
                           skip: list[str]) -> None:
        """Refuse a rank the targeted layers cannot hold: LoRA's update B·A has rank at most min(d_in, d_out), so a
        larger `method.r` only adds parameters."""
        from bench.techniques.targets import check_rank_fits

        check_rank_fits(model, targets=targets, r=method.r, skip=skip)

    # --- building the model (bench.models.build.assemble) ----------------------------------------------------
    def quantization(self, method: MethodConfig, *, compute_dtype: torch.dtype, skip: list[str]) -> Any:
        """The transformers quantization config the base loads with (bitsandbytes NF4), or None."""
        return None

    def before_loading(self, method: MethodConfig, weights: Any) -> Any:
        """What the technique reads from the checkpoint before the base loads (LoftQ: the 32-bit weights), handed
        to `initialise`; None for nothing."""
        return None

    def prepare_base(self, method: MethodConfig, base: torch.nn.Module, *, weights: Any, built: BuiltModel,
                     skip: list[str]) -> dict[str, Any]:
        """Change the loaded base before the adapter wraps it (QA-LoRA quantizes it, LongLoRA switches on S²-Attn
        and trains the embedding and norms: `built.also_trained`, `built.lr_by_module`); returns options for the
        adapter's peft config."""
        return {}

    def peft_config(self, method: MethodConfig, *, task_type: str, targets: str | list[str],
                    modules_to_save: list[str], initialise: bool, **extra: Any) -> Any:
        """The peft config of the adapter; `initialise=False` keeps peft's plain initialisation where the technique
        would decompose the weights (a plan's skeleton has no values to decompose)."""
        from peft import LoraConfig

        options = self.lora_options(method)
        if not initialise:
            options.pop("init_lora_weights", None)
        return LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                          target_modules=targets, bias=method.bias, **options, **extra,
                          modules_to_save=list(modules_to_save))  # peft extends the list it is given

    def lora_options(self, method: MethodConfig) -> dict[str, Any]:
        """The LoraConfig options that make a variant out of plain LoRA (`use_dora`, `init_lora_weights`)."""
        return {}

    def initialise(self, method: MethodConfig, model: torch.nn.Module, read: Any) -> dict[str, float]:
        """Set the adapter's start after peft wrapped the base, from what `before_loading` read; returns what
        the initialisation measured (logged with the run's static figures)."""
        return {}

    def lr_scales(self, method: MethodConfig) -> dict[str, float]:
        """Modules (a dotted name's part, as `lora_B`) that train at a multiple of `trainer.lr` (LoRA+)."""
        return {}

    # --- after training (bench.run.runner) ---------------------------------------------------------------------
    def after_training(self, method: MethodConfig, model: torch.nn.Module, batch: Callable[[], dict[str, Any]], *,
                       device: torch.device, autocast_dtype: torch.dtype) -> dict[str, float]:
        """What the technique checks on the trained model, outside training's figures (QA-LoRA: its merge)."""
        return {}

    # --- bench plan's analytic estimate (bench.plan.analytic), from shapes alone -----------------------------
    def adapter_params(self, method: MethodConfig, *, d_in: int, d_out: int) -> int | None:
        """Trainable adapter parameters on one targeted linear (LoRA: B·A); None when the technique cannot say."""
        return method.r * (d_in + d_out)

    def adapter_buffer_bytes(self, method: MethodConfig, census: Census) -> int:
        """Frozen tensors the adapter adds beside its trained ones (VeRA's shared random projections)."""
        return 0

    def quantized_bytes(self, method: MethodConfig, *, numel: int, size: int) -> int:
        """Bytes of one body linear weight of `numel` elements as the base holds it (`size` bytes each in 16-bit)."""
        return numel * size

    def extra_activations(self, method: MethodConfig, census: Census, *, tokens: int, element: int) -> int:
        """What autograd saves beyond LoRA's activations for `tokens` tokens (DoRA's dense B·A, HQQ's dequantized
        weights)."""
        return 0


def warn(message: str) -> None:
    """A technique's advice, on stderr, where the run's warnings go."""
    print(f"warning: {message}", file=sys.stderr)
