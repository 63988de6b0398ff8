"""Every model config of conf/model composes into a valid run config and, where its config.json is on this machine
(a package, a tiny model, a config-only model, a local folder), builds its transformers config without a download;
the config-only models have the sizes their publishers give."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bench.cli import group_choices

# The parameter counts the hub's model pages give (from the weights' safetensors metadata), to three figures:
# a wrong width, depth, head count or vocabulary in a shipped config changes them.
PUBLISHED = {"llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.6e9, "llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9,
             "mistral-7b": 7.25e9,
             "qwen2.5-7b": 7.62e9}


def _run_config(model: str, folder: Path):
    """`model=<model>` composed as `bench run` would; the two configs that need a value from the user get one."""
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig

    extra = {"causal-hub": ["model.hub_id=Qwen/Qwen2.5-0.5B"], "local": [f"model.path={folder}"]}.get(model, [])
    composed = compose([f"model={model}", *extra, "output_dir=."])
    return RunConfig.from_dict(OmegaConf.to_container(composed, resolve=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved config.json, for model=local."""
    from transformers import LlamaConfig

    saved = tmp_path_factory.mktemp("local-model")
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=256).save_pretrained(saved)
    return saved


@pytest.mark.parametrize("model", group_choices("model"))
def test_every_model_config_composes_and_builds_its_transformers_config(model: str, folder: Path) -> None:
    from bench.models.load import model_config, resolve_location

    cfg = _run_config(model, folder)  # raises ConfigError if the config is invalid
    assert cfg.model.name == model or model == "local"
    if cfg.model.source == "hub" and not cfg.model.path:
        assert "/" in (cfg.model.hub_id or "") or cfg.model.hub_id.replace("-", "").isalnum()
        pytest.skip(f"{model}'s config.json is on the hub ({cfg.model.hub_id}): tests download nothing")
    if cfg.model.source == "gguf" and importlib.util.find_spec(cfg.model.package.split("/")[0]) is None:
        pytest.skip(f"{model}'s GGUF comes in the package {cfg.model.package.split('/')[0]!r}, not installed")
    labels = None if cfg.task == "causal_lm" else ["a", "b"]
    config = model_config(cfg.model, resolve_location(cfg.model), labels)
    assert config.model_type and config.num_hidden_layers > 0
    if cfg.model.source == "config":
        assert cfg.task == "causal_lm" and config.model_type == cfg.model.architecture["model_type"]


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_config_only_models_have_their_published_sizes(model: str, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from bench.models.load import model_config, resolve_location

    cfg = _run_config(model, folder)
    assert cfg.model.source == "config"
    with torch.device("meta"):  # shapes only: a 70B model costs nothing
        built = AutoModelForCausalLM.from_config(model_config(cfg.model, resolve_location(cfg.model)))
    assert float(f"{sum(p.numel() for p in built.parameters()):.3g}") == PUBLISHED[model]


def test_every_config_only_model_is_covered() -> None:
    shipped = {name for name in group_choices("model")
               if "source: config" in (Path(__file__).parents[2] / "conf" / "model" / f"{name}.yaml").read_text()}
    assert shipped == set(PUBLISHED)
