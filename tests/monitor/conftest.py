"""Tests marked `gpu` need CUDA: skipped, with the reason, where torch sees no GPU."""

from __future__ import annotations

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (marked gpu)")
