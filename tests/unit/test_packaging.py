"""The installed package finds its Hydra config and keeps `bench --help` free of heavy imports."""

from __future__ import annotations

import subprocess
import sys

from bench.cli import GROUPS, conf_dir, group_choices


def test_conf_ships_with_the_package() -> None:
    assert (conf_dir() / "config.yaml").is_file()
    for group in GROUPS:
        assert group_choices(group), group
    assert group_choices("method") == ["dora", "full", "loftq", "longlora", "lora", "olora", "pissa", "qalora", "qlora",
                                       "rslora"]  # `_base` is a fragment, not a choice
    assert {"minilm", "distilbert-base-uncased", "roberta-base", "local", "tiny-bert"} <= set(group_choices("model"))
    assert {"tweets", "sst2", "imdb", "rotten_tomatoes", "local"} <= set(group_choices("data"))


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys; from bench.cli import main; main(['--help']); "
            "print(sorted(m for m in ('torch', 'mlflow', 'transformers', 'hydra') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "bench run" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
