"""The causal-LM half of one run (`task=causal_lm`): after the run's shared set-up in `bench.runner`, read
the SFT pairs, check the model, tokenize, measure the general-text loss, train with the one loop, measure it
again, record and ship.

Forgetting is `eval/general_loss_after - eval/general_loss_before`, both on the same general English chunks
(`bench.causal.general`) and the model as built for the technique: for QLoRA "before" is the 4-bit base, so
the number is what training changed, not what quantization did.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.config import RunConfig


def run_causal(cfg: RunConfig, *, tracker: Any, device: Any, location: str, output_dir: Path) -> dict[str, float]:
    """Train and evaluate a causal LM; returns the metrics it logged (eval/accuracy is NaN without labels)."""
    from bench.causal.models import check_causal_head, check_context, materialize_tiny_causal
    from bench.causal.sft import load_sft_splits
    from bench.models import load_tokenizer, model_limits

    check_causal_head(cfg.model, location)  # from the config alone, before any data or weights
    splits = load_sft_splits(cfg.data)
    baseline = {} if splits.majority_baseline is None else {"eval/majority_baseline": splits.majority_baseline}
    tracker.log({**baseline, "data/train_rows": len(splits.train), "data/eval_rows": len(splits.eval)})
    tokenizer = load_tokenizer(cfg.model, location)
    if location.startswith("tiny:"):
        location = materialize_tiny_causal(cfg.model, tokenizer=tokenizer, seed=cfg.seed)
    model_type, model_limit = model_limits(location, cfg.model)
    check_context(cfg.data.max_length, model_limit=model_limit, tokenizer=tokenizer, model_name=cfg.model.name)
    inputs = _encode(cfg, splits, tokenizer=tokenizer, tracker=tracker)
    final = _train_and_measure(cfg, inputs, tracker=tracker, device=device, location=location,
                               model_type=model_type, output_dir=output_dir)
    print(f"causal LM: eval/perplexity {final['eval/perplexity']:.3f}, eval/forgetting {final['eval/forgetting']:+.4f} "
          f"(general English loss {final['eval/general_loss_before']:.4f} -> {final['eval/general_loss_after']:.4f})")
    # The runner's summary line reads accuracy and baseline; free-form answers have neither (NaN, not logged).
    return {"eval/accuracy": math.nan, "eval/majority_baseline": math.nan, **baseline, **final}


def _encode(cfg: RunConfig, splits: Any, *, tokenizer: Any, tracker: Any) -> dict[str, Any]:
    """Every batch the run needs, made before the model loads, so the monitor's baseline holds the data and
    its net peaks are the model's and the training's alone."""
    from bench.causal.encode import eval_set, pick_format, train_loader
    from bench.causal.general import general_rows, source_name

    fmt = pick_format(tokenizer, cfg.data.prompt_format)
    tracker.set_tags({"prompt_format": "chat" if fmt.chat else "plain", "forgetting/text": source_name(),
                      "labels": splits.labels})
    length = cfg.data.max_length
    return {
        "train": train_loader(splits.train, tokenizer=tokenizer, fmt=fmt, max_length=length,
                              batch_size=cfg.trainer.batch_size, seed=cfg.seed),
        "eval": eval_set(splits.eval, splits.answers, tokenizer=tokenizer, fmt=fmt, max_length=length),
        "general": general_rows(tokenizer, chunks=cfg.data.general_eval_chunks, length=length, bos=fmt.bos),
        "pad_id": tokenizer.pad_token_id,
    }


def _train_and_measure(cfg: RunConfig, inputs: dict[str, Any], *, tracker: Any, device: Any, location: str,
                       model_type: str, output_dir: Path) -> dict[str, float]:
    from bench.causal.metrics import evaluate_sft, general_loss
    from bench.monitor import Monitor
    from bench.monitor.results import run_metrics
    from bench.runner import _build, _ship
    from bench.train import train

    with Monitor.for_device(device, cfg.monitor, timeline_dir=output_dir / "monitor") as monitor:
        built, static = _build(cfg, tracker=tracker, location=location, model_type=model_type, labels=[],
                               device=device)
        built.model.config.use_cache = False  # no KV cache while training or scoring: it would only cost memory
        general = partial(general_loss, rows=inputs["general"], device=device, autocast_dtype=built.compute_dtype,
                          batch_size=cfg.trainer.eval_batch_size, pad_id=inputs["pad_id"])
        before = general(built.model)
        tracker.log({"eval/general_loss_before": before})
        tracker.set_tags({"timing/train_start_ms": int(time.time() * 1000)})
        monitor.mark_training()
        result = train(model=built.model, train_loader=inputs["train"], eval_loader=inputs["eval"],
                       trainer=cfg.trainer, device=device, autocast_dtype=built.compute_dtype, log=tracker.log,
                       desc=f"{cfg.method.name} {cfg.model.name}", hooks=monitor,
                       warmup_steps=cfg.monitor.warmup_steps, lr_by_module=built.lr_by_module,
                       evaluate=partial(evaluate_sft, batch_size=cfg.trainer.eval_batch_size))
    after = general(built.model)
    forgetting = {"eval/general_loss_after": after, "eval/forgetting": after - before}
    tracker.log(forgetting, result.steps)
    # No memory prediction for causal LMs yet (bench.estimate sizes a classification head, not the logits).
    measured, tags = run_metrics(result=result, monitor=monitor, static=static, predicted=math.nan, device=device)
    measured.pop("mem/prediction_error_pct", None)
    tags.pop("mem/prediction_compared_with", None)
    tracker.set_tags(tags)
    if monitor.timeline is not None:
        tracker.log_artifacts(monitor.timeline.parent, "monitor")
    shipped = _ship(built.model, output_dir=output_dir, uses_adapter=cfg.method.uses_adapter, tracker=tracker,
                    upload=cfg.tracker.log_model)
    final = {**static, **measured, **result.final_eval, **forgetting, "artifact/adapter_bytes": shipped,
             "eval/general_loss_before": before}
    tracker.log({k: v for k, v in final.items() if k not in static and not k.startswith("eval/")}, result.steps)
    return final
