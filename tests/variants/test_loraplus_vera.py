"""LoRA+ and VeRA, each added as one module and one YAML: LoRA+ trains B at lr_ratio x the rate, through the run's
own loop; VeRA adapts with shared frozen projections and two trained vectors per layer, trains, and ships an
adapter that reloads (and merges) into the model it trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import (
    TINY,
    TINY_BERT_HIDDEN,
    TINY_BERT_LABELS,
    TINY_BERT_LAYERS,
    composed_method,
    finished_runs,
    run_cli_here,
    tiny_bert_location,
    tiny_bert_spec,
)

from bench.config import TrainerConfig
from bench.models.build import build_model
from bench.models.footprint import parameter_counts
from bench.models.load import ModelLocation, load_classifier
from bench.training.loop import build_optimizer

LABELS = TINY_BERT_LABELS
HIDDEN, LAYERS = TINY_BERT_HIDDEN, TINY_BERT_LAYERS
SPEC = tiny_bert_spec()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def location() -> ModelLocation:
    return tiny_bert_location(SPEC)


def _build(location: ModelLocation, name: str, *overrides: str):
    method = composed_method(name, "method.dtype=fp32", "method.compute_dtype=fp32", "method.dropout=0.0",
                             *overrides)
    return build_model(method=method, spec=SPEC, location=location, model_type="bert", labels=LABELS, device=CPU)


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 1000, (8, 12), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(8) % 3}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        batch = _batch(seed=2)
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_loraplus_puts_b_at_the_ratio_times_the_rate(location: ModelLocation) -> None:
    built = _build(location, "loraplus", "method.options.lr_ratio=8")
    optimizer = build_optimizer(built.model, TrainerConfig(lr=1e-3), built.rates(1e-3))
    by_rate = {group["lr"]: {id(p) for p in group["params"]} for group in optimizer.param_groups}
    names = {id(p): name for name, p in built.model.named_parameters()}
    assert sorted(by_rate) == [pytest.approx(1e-3), pytest.approx(8e-3)]
    fast = {names[i] for i in by_rate[max(by_rate)]}
    slow = {names[i] for i in by_rate[min(by_rate)]}
    assert fast and all(".lora_B." in name for name in fast)
    assert len(fast) == LAYERS * 2  # query and value of each layer
    assert any(".lora_A." in name for name in slow) and any("classifier" in name for name in slow)
    assert not any(".lora_B." in name for name in slow)


def test_a_loraplus_run_trains_b_faster_through_the_run_loop(tmp_path: Path, monkeypatch) -> None:
    """The rates reach the optimizer of a real `bench run`: the loop is the one every technique trains with."""
    from bench.training import loop

    seen: list[dict[float, list[str]]] = []
    original = loop.build_optimizer

    def recording(model, trainer, lr_by_module=None):
        optimizer = original(model, trainer, lr_by_module)
        names = {id(p): name for name, p in model.named_parameters()}
        seen.append({group["lr"]: [names[id(p)] for p in group["params"]] for group in optimizer.param_groups})
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", recording)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli_here(*TINY, "method=loraplus", "method.options.lr_ratio=4", "trainer.lr=1e-3",
                          f"tracker.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    groups = seen[-1]  # the run's own optimizer (the plan traced its own before)
    assert sorted(groups) == [pytest.approx(1e-3), pytest.approx(4e-3)]
    assert all(".lora_B." in name for name in groups[max(groups)])
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.technique"] == "loraplus"
    assert run["params.method.options.lr_ratio"] == "4"


def test_vera_trains_two_vectors_per_layer_on_shared_frozen_projections(location: ModelLocation) -> None:
    built = _build(location, "vera")
    r = built.model.peft_config["default"].r
    assert r == 256 > HIDDEN  # the paper's rank, above the layers' width: the projections are shared, not per layer
    vectors = {name: p for name, p in built.model.named_parameters() if "vera_lambda" in name}
    assert len(vectors) == LAYERS * 2 * 2 and all(p.requires_grad for p in vectors.values())
    assert {tuple(p.shape) for name, p in vectors.items() if "lambda_d" in name} == {(r,)}
    assert {tuple(p.shape) for name, p in vectors.items() if "lambda_b" in name} == {(HIDDEN,)}
    head = HIDDEN * len(LABELS) + len(LABELS)
    assert parameter_counts(built.model)["params/trainable"] == LAYERS * 2 * (r + HIDDEN) + head
    shared = dict(built.model.base_model.vera_A), dict(built.model.base_model.vera_B)
    assert [tuple(t.shape) for part in shared for t in part.values()] == [(r, HIDDEN), (HIDDEN, r)]
    assert not any(t.requires_grad for part in shared for t in part.values())
    # λ_b starts at zero: VeRA starts as the pretrained model
    original = load_classifier(location=location, spec=SPEC, labels=LABELS, dtype=torch.float32, device=CPU)
    assert torch.allclose(_logits(built.model), _logits(original), atol=1e-5)


def test_vera_trains_and_ships_an_adapter_that_reloads_and_merges(location: ModelLocation, tmp_path: Path) -> None:
    from peft import PeftModel

    built = _build(location, "vera", "method.options.d_initial=0.5")
    model = built.model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(8):
        loss = model(**_batch()).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    trained = _logits(model)
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = load_classifier(location=location, spec=SPEC, labels=LABELS, dtype=torch.float32, device=CPU)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")  # the shared projections come with it
    assert torch.allclose(_logits(reloaded), trained, atol=1e-5)
    merged = reloaded.merge_and_unload()
    assert torch.allclose(_logits(merged), trained, atol=1e-4)
