"""Which process is which rank, from the launcher's environment; and the config of a distributed run."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf
from support import TINY

from bench.cli import compose
from bench.config import RunConfig
from bench.distributed.context import RankInfo, rank_info, under_launcher
from bench.distributed.ranks import needs_launch

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS",
                      "SLURM_LOCALID")


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _config(*overrides: str) -> RunConfig:
    return RunConfig.from_dict(OmegaConf.to_container(compose([*TINY, *overrides, "output_dir=."]), resolve=True))


def test_a_plain_process_is_a_single_run(bare_env) -> None:
    assert rank_info() == RankInfo() and not under_launcher()
    assert needs_launch(_config("trainer.strategy=ddp", "trainer.nproc=2").trainer)  # bench starts torchrun
    assert not needs_launch(_config().trainer)


def test_torchrun_sets_the_rank(bare_env) -> None:
    bare_env.setenv("RANK", "3")
    bare_env.setenv("WORLD_SIZE", "4")
    bare_env.setenv("LOCAL_RANK", "1")
    assert rank_info() == RankInfo(3, 4, 1) and not rank_info().is_main
    assert not needs_launch(_config("trainer.strategy=fsdp", "trainer.nproc=4").trainer)  # no second launch


def test_srun_with_several_tasks_sets_the_rank_and_one_task_does_not(bare_env) -> None:
    bare_env.setenv("SLURM_PROCID", "0")
    bare_env.setenv("SLURM_NTASKS", "1")  # a sweep cell's task: bench launches torchrun inside it
    assert not under_launcher()
    bare_env.setenv("SLURM_PROCID", "1")
    bare_env.setenv("SLURM_NTASKS", "2")
    bare_env.setenv("SLURM_LOCALID", "1")
    assert rank_info() == RankInfo(1, 2, 1) and under_launcher()


def test_a_single_process_run_keeps_the_hash_it_had_before_distributed_runs() -> None:
    single, spread = _config(), _config("trainer.strategy=ddp", "trainer.nproc=2")
    assert {"strategy", "nproc"}.isdisjoint(single.effective()["trainer"])
    assert spread.effective()["trainer"]["strategy"] == "ddp" and spread.effective()["trainer"]["nproc"] == 2
    assert single.hash({}) != spread.hash({})
    # the launcher hands the workers the typed config as a dict: it comes back the same
    assert RunConfig.from_dict(dataclasses.asdict(spread)) == spread


def test_fsdp_ranks_sharing_a_gpu_are_refused_and_ddp_ones_are_not(bare_env) -> None:
    import torch

    from bench.config import ConfigError
    from bench.distributed.ranks import check_strategy

    bare_env.setattr(torch.cuda, "device_count", lambda: 1)  # checked before any CUDA call: no GPU needed
    with pytest.raises(ConfigError, match="cannot all-gather or reduce-scatter"):
        check_strategy(_config("trainer.strategy=fsdp", "trainer.nproc=2"), torch.device("cuda"))
    check_strategy(_config("trainer.strategy=fsdp", "trainer.nproc=1"), torch.device("cuda"))
    check_strategy(_config("trainer.strategy=ddp", "trainer.nproc=2"), torch.device("cuda"))  # gloo moves them


def test_each_ranks_figures_read_back_from_the_run_metrics() -> None:
    from bench.distributed.figures import per_rank, run_figures

    figures = [{"tokens_per_s": 10.0, "samples_per_s": 1.0, "tokens": 5.0, "tensor_peak_bytes": 7.0},
               {"tokens_per_s": 12.0, "samples_per_s": 2.0, "tokens": 6.0, "tensor_peak_bytes": 9.0}]
    metrics, _ = run_figures(figures, strategy="ddp", backend="gloo")
    assert per_rank(metrics) == figures
    assert per_rank({"train/tokens_per_s": 3.0}) == []  # a single-process run
