"""Locate files that ship inside installed PyPI packages (models and data usable offline); check the folders bench will
write before any work starts."""

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


def check_writable_folder(path: str | Path, *, key: str) -> None:
    """Raise ConfigError, naming `key`, when bench could not create or write the folder `path`: checked before any
    work starts, leaving nothing behind. The nearest existing folder on the way must take a new entry (tried for
    real, with an empty folder removed at once: permission bits say nothing to root, nor of a read-only mount or
    /proc), and nothing on the way may be a file."""
    folder = Path(path).expanduser().absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:  # pragma: no cover - the root exists
        return
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under the file {str(existing)!r}"
        raise ConfigError(f"{key}={str(path)!r} cannot be written: it {where}")
    try:
        Path(tempfile.mkdtemp(prefix=".bench-check-", dir=existing)).rmdir()
    except OSError as error:
        where = "" if existing == folder else f" (nothing can be created in {str(existing)!r})"
        raise ConfigError(f"{key}={str(path)!r} cannot be written{where}: {error.strerror}") from None


def create_output_folder(path: str, *, key: str) -> Path:
    """The folder a run writes what it ships into, created now: a ConfigError naming `key` if it cannot be."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{key}={path!r} cannot be created: {error.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{key}={path!r} is not writable")
    return folder
