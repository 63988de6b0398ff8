"""The plan engine's own rules: a deep model extrapolated from two shallow traces gives the peak a full trace
gives, also when the phase that peaks changes with depth; a paged optimizer's state is left out of a CUDA plan."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bench.cli import compose
from bench.config import RunConfig
from bench.models.precision import PlannedDevice
from bench.plan.engine import plan_memory, trace_plan

# MiniLM's width at 6 layers with a short text: full fine-tuning peaks in the optimizer's step at 2 and 3
# layers and in the forward pass at 6, where the activations outgrow the step's temporaries
DEEP_BERT = ["model=tiny-bert", "model.architecture.hidden_size=384", "model.architecture.num_hidden_layers=6",
             "model.architecture.num_attention_heads=12", "model.architecture.intermediate_size=1536",
             "data.max_length=64", "trainer.batch_size=16"]
TINY_CAUSAL = ["model=tiny-llama", "data.max_length=32", "trainer.batch_size=2"]


def _config(*overrides: str) -> RunConfig:
    return RunConfig.from_dict(OmegaConf.to_container(compose([*overrides, "output_dir=."]), resolve=True))


@pytest.mark.parametrize("technique", ["full", "lora"])
def test_extrapolated_in_depth_equals_the_full_trace(technique: str) -> None:
    from bench.models.load import model_config, resolve_location

    cfg = _config(*DEEP_BERT, f"method={technique}")
    config = model_config(cfg.model, resolve_location(cfg.model), ["0", "1", "2"])
    device = PlannedDevice("cuda")
    extrapolated = plan_memory(cfg, device=device, config=config)
    traced = trace_plan(cfg, device=device, config=config, batch_size=16)
    assert any("extrapolated" in note for note in extrapolated.notes)
    assert extrapolated.peak_phase == traced.peak_phase
    assert extrapolated.peak_module  # where the phase peaked in the deepest trace, also when the phase changed
    assert abs(extrapolated.peak_bytes - traced.peak_bytes) <= 0.005 * traced.peak_bytes


def test_a_paged_optimizers_state_is_left_out_of_a_cuda_plan() -> None:
    device = PlannedDevice("cuda")
    plain = plan_memory(_config(*TINY_CAUSAL, "method=full", "trainer.optimizer=adamw_8bit"), device=device)
    paged = plan_memory(_config(*TINY_CAUSAL, "method=full", "trainer.optimizer=paged_adamw_8bit"), device=device)
    assert plain.categories["optimizer"] > 0 and paged.categories["optimizer"] == 0
    assert paged.paged_bytes == max(found["optimizer"] for found in plain.phases.values())
    assert paged.metrics()["plan/paged_bytes"] == paged.paged_bytes
    assert any("paged to host RAM" in note for note in paged.notes)
