"""Locate files that ship inside installed PyPI packages (models and data usable offline)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.core.errors import ConfigError


def package_file(spec: str, *, key: str) -> Path:
    """Resolve `<python package>/<path inside it>` without importing the package (imports can be heavy)."""
    package, _, inner = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ConfigError(f"{key}={spec!r} needs the package {package!r}; install it with `pip install {pip_name}`")
    path = Path(next(iter(found.submodule_search_locations))) / inner
    if not path.exists():
        raise ConfigError(f"{key}={spec!r}: {path} does not exist in the installed package")
    return path


def cache_root() -> Path:
    """Where built models are cached (tiny random models, converted GGUF models): `$BENCH_CACHE`, else
    `~/.cache/bench`."""
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


def save_whole(write: Callable[[Path], None], folder: Path) -> None:
    """`write(staging)` into a temporary folder beside `folder`, then rename it into place, so that parallel
    sweep cells never read a half-written model (`config.json` before the weights); the loser of a race drops
    its copy and uses the winner's."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(staging)
        staging.rename(folder)
    except OSError:
        if not (folder / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
