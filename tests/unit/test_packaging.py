"""The wheel users install carries the Hydra config, and `bench --help` stays free of heavy imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.cli import GROUPS, conf_dir, group_choices
from bench.techniques import NAMES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names inside the wheel that this checkout builds (hatchling, as `pip install .` uses it)."""
    from hatchling.builders.wheel import WheelBuilder

    folder = tmp_path_factory.mktemp("wheel")
    built = list(WheelBuilder(str(REPO)).build(directory=str(folder), versions=["standard"]))
    assert len(built) == 1, built
    with zipfile.ZipFile(built[0]) as wheel:
        return wheel.namelist()


def test_the_wheel_ships_every_config_group(wheel_files: list[str]) -> None:
    assert "bench/conf/config.yaml" in wheel_files
    for group in GROUPS:
        shipped = sorted(Path(name).stem for name in wheel_files
                         if name.startswith(f"bench/conf/{group}/") and name.endswith(".yaml"))
        assert shipped == sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")), group
    assert "bench/report/assets/report.css" in wheel_files  # the report's assets travel too
    assert "bench/core/metrics.toml" in wheel_files  # and the metric registry's table


def test_conf_choices_match_the_table_of_techniques() -> None:
    assert (conf_dir() / "config.yaml").is_file()
    assert group_choices("method") == sorted(NAMES)  # one YAML per technique of bench.techniques, and no other
    assert {"minilm", "distilbert-base-uncased", "roberta-base", "local", "tiny-bert"} <= set(group_choices("model"))
    assert {"tweets", "sst2", "imdb", "rotten_tomatoes", "local"} <= set(group_choices("data"))


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys; from bench.cli import main; main(['--help']); "
            "print(sorted(m for m in ('torch', 'mlflow', 'transformers', 'hydra') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "bench run" in result.stdout and ", ".join(NAMES) in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
