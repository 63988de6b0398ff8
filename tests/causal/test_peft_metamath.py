"""`experiment=peft-metamath`, peft's MetaMathQA benchmark as a preset: its numbers are peft's, and its data path
(MetaMathQA's `query`/`response` for training, GSM8K's `question`/`answer` renamed for validation and test, prompts
in peft's template) runs offline on local files of the same columns, through the real CLI on the tiny Llama, packed
and not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict
from support import TINY_CAUSAL, assert_one_error_line, assert_plan_matches, finished_runs, run_cli_here

from bench.cli import compose
from bench.config import ConfigError, DataConfig, RunConfig

QUESTIONS = ["Natalia sold clips to {n} of her friends in April, and then she sold half as many clips in May.",
             "Weng earns ${n} an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
             "Betty is saving money for a new wallet which costs ${n}. Betty has only half of the money she needs.",
             "James writes a {n}-page letter to 2 different friends twice a week. How many pages a year?",
             "Mark has a garden with flowers. He planted plants of {n} different colors in it.",
             "Albert is wondering how much pizza he can eat in one day. He buys {n} large pizzas and 2 small ones."]


def _metamath(count: int) -> list[dict[str, str]]:
    return [{"query": QUESTIONS[i % len(QUESTIONS)].format(n=i + 2), "response": f"Step by step: {i} + 2 = {i + 2}. "
             f"The answer is: {i + 2}", "type": "GSM_Rephrased", "original_question": "..."} for i in range(count)]


def _gsm8k(count: int, start: int) -> list[dict[str, str]]:
    return [{"question": QUESTIONS[i % len(QUESTIONS)].format(n=1000 + start + i),
             "answer": f"She has {start + i} left.\n#### {start + i}"} for i in range(count)]


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def local_files(tmp_path):
    """MetaMathQA-shaped train, GSM8K-shaped train (validation) and test files, written into tmp."""
    return {"data.path": _jsonl(tmp_path / "metamath.jsonl", _metamath(40)),
            "data.eval_path": _jsonl(tmp_path / "gsm8k_train.jsonl", _gsm8k(12, 0)),
            "data.test_path": _jsonl(tmp_path / "gsm8k_test.jsonl", _gsm8k(10, 500))}


def _offline(files: dict[str, str]) -> list[str]:
    """The preset's data, read from local files in the same columns instead of the hub."""
    return ["data.source=local", *(f"{key}={value}" for key, value in files.items()), "data.hub_eval_id=null",
            "data.hub_eval_config=null", "data.hub_test_id=null", "data.hub_test_config=null",
            "data.hub_eval_split=null", "data.hub_test_split=null"]


def _composed(*overrides: str) -> RunConfig:
    cfg = compose(["experiment=peft-metamath", *overrides])
    with open_dict(cfg):
        del cfg["output_dir"]
    return RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))


def test_the_preset_holds_peft_s_numbers() -> None:
    """default_training_params.json and experiments/lora/llama-3.2-3B-rank32/adapter_config.json (peft 5d602fd)."""
    cfg = _composed()
    assert (cfg.model.source, cfg.model.hub_id, cfg.task) == ("hub", "meta-llama/Llama-3.2-3B", "causal_lm")
    trainer = cfg.trainer
    assert (trainer.lr, trainer.max_steps, trainer.batch_size, trainer.weight_decay, trainer.schedule,
            trainer.warmup_ratio, trainer.max_grad_norm, cfg.seed) == (1e-4, 5000, 4, 0.1, "cosine", 0.1, 1.0, 0)
    assert (cfg.method.r, cfg.method.alpha, cfg.method.dropout, cfg.method.target_modules) == (32, 64, 0.0, "qv")
    data = cfg.data
    assert (data.hub_id, data.hub_test_id, data.hub_test_config, data.hub_test_split) == (
        "meta-math/MetaMathQA", "openai/gsm8k", "main", "test")
    assert (data.max_length, data.max_eval_samples, data.prompt_format) == (768, 50, "plain")
    assert data.prompt_column_template == "Question: {prompt} Think step by step.\nAnswer:"
    # the test split scored as peft scores it: the generated final answer's exact match, 300 new tokens at most
    assert (data.scoring, data.answer_rule, data.max_new_tokens) == ("generation", "final_number", 300)
    preset = OmegaConf.load(Path(__file__).parents[2] / "conf" / "experiment" / "peft-metamath.yaml")
    swept = set(preset.hydra.sweeper.params.method.split(","))
    assert {"lora", "dora", "qlora", "pissa", "olora", "loftq", "qalora", "rslora"} <= swept


def test_the_data_path_reads_both_shapes_offline(local_files) -> None:
    from bench.tasks.causal.sft import load_sft_splits

    spec = _composed(*_offline(local_files)).data
    splits = load_sft_splits(spec)
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (40, 12, 10)
    assert splits.test[0].prompt.startswith("Question: ") and splits.test[0].prompt.endswith(
        " Think step by step.\nAnswer:")
    assert splits.test[0].response.endswith("#### 500") or any(p.response.endswith("#### 500") for p in splits.test)
    assert all(p.prompt.startswith("Question: ") for p in splits.train)


def test_a_missing_column_names_it_the_columns_and_the_key(local_files, tmp_path) -> None:
    """GSM8K's columns without the rename: one error line with the column, the split's columns and the keys."""
    result = run_cli_here("experiment=peft-metamath", "model=tiny-llama", "method=lora", "hydra.mode=RUN",
                          *_offline(local_files), "~data.rename_columns.test", "data.max_length=96",
                          "data.max_new_tokens=16",
                          f"tracker.uri=sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert_one_error_line(result, "the test split (file ", "gsm8k_test.jsonl) has no column 'query' "
                          "(data.prompt_column)", "its columns are: question, answer", "data.rename_columns.test")


def test_a_rename_of_a_column_that_is_not_there_names_the_columns(local_files) -> None:
    from bench.tasks.causal.sft import load_sft_splits

    spec = _composed(*_offline(local_files)).data
    typo = DataConfig(**{**vars(spec), "rename_columns": {"eval": {"quest": "query", "answer": "response"}}})
    with pytest.raises(ConfigError, match=r"the eval split \(file .*gsm8k_train.jsonl\) has no column 'quest' to "
                                          r"rename; its columns are: question, answer "
                                          r"\(set data.rename_columns.eval\)"):
        load_sft_splits(typo)


def test_a_tiny_run_through_the_preset_packed_and_padded(local_files, tmp_path) -> None:
    """Two steps of 8 rows each: packed rows hold several examples, so the packed run trains on more real tokens."""
    tokens = {}
    for packing in ("false", "true"):
        store = f"sqlite:///{tmp_path / f'{packing}.db'}"
        result = run_cli_here("experiment=peft-metamath", *TINY_CAUSAL, "method=lora", "hydra.mode=RUN",
                              *_offline(local_files), "data.max_length=112", "data.max_new_tokens=16",
                              f"data.packing={packing}",
                              f"tracker.uri={store}", f"hydra.run.dir={tmp_path / packing}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        run = finished_runs(store).iloc[0]
        assert run["status"] == "FINISHED" and run["params.data.name"] == "metamath-gsm8k"
        # logged where it is set: a key at its default stays out of the params (and the config hash)
        assert run.get("params.data.packing") == ("True" if packing == "true" else None)
        assert run["metrics.data/test_rows"] == 10 and run["metrics.data/eval_rows"] == 12
        assert math.isfinite(run["metrics.test/perplexity"]) and math.isfinite(run["metrics.eval/forgetting"])
        assert run["tags.eval/scoring"] == "generation" and 0 <= run["metrics.test/exact_match"] <= 1
        tokens[packing] = run["metrics.train/tokens"]
        assert_plan_matches(run)  # the plan follows packing: its packed batch is the run's, within 5 %
    assert tokens["true"] > 1.5 * tokens["false"]


def test_each_split_from_its_own_hub_data_set(tmp_path, monkeypatch) -> None:
    """The preset's hub path as it runs, on local folders that `datasets.load_dataset` reads as data sets: train
    from a MetaMathQA-shaped one, validation and test from the splits of a GSM8K-shaped one, renamed."""
    import datasets

    from bench.tasks.causal.sft import load_sft_splits

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")  # its Arrow files

    metamath, gsm8k = tmp_path / "metamath", tmp_path / "gsm8k"
    metamath.mkdir()
    gsm8k.mkdir()
    _jsonl(metamath / "train.jsonl", _metamath(30))
    _jsonl(gsm8k / "train.jsonl", _gsm8k(20, 0))
    _jsonl(gsm8k / "test.jsonl", _gsm8k(8, 500))
    spec = _composed(f"data.hub_id={metamath}", f"data.hub_eval_id={gsm8k}", f"data.hub_test_id={gsm8k}",
                     "data.hub_eval_config=null", "data.hub_test_config=null", "data.max_eval_samples=6").data
    splits = load_sft_splits(spec)
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (30, 6, 8)
    assert {p.response.split("#### ")[1] for p in splits.test} == {str(500 + i) for i in range(8)}
    assert all(p.response.startswith("Step by step") for p in splits.train)
