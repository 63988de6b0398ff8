"""The named ranges a profile is read from. While a profile records, forward hooks open a `bench::<category>`
range around each scoped module's call, and the training loop's own ranges (data, optimizer) are opened through
`scope()`; outside the profiled steps no hook is installed and `scope()` costs one flag check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bench.core.ranges import range_name, scope
from bench.measure.profile.categories import dequantizing_modules, module_categories

if TYPE_CHECKING:
    import torch


class ModuleScopes:
    """`with ModuleScopes(model):` scoped modules (`module_categories`) open their category's range around each
    call, and HQQ layers' `dequantize()` opens the dequantization range; everything is removed on leaving."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._handles: list[Any] = []
        self._open: dict[int, list[Any]] = {}  # id(module) -> ranges open for it (a module can be re-entered)
        self._patched: list[Any] = []

    def __enter__(self) -> ModuleScopes:
        named = dict(self.model.named_modules())
        for name, category in module_categories(self.model).items():
            module = named[name]
            self._handles.append(module.register_forward_pre_hook(self._opener(category)))
            self._handles.append(module.register_forward_hook(self._closer, always_call=True))
        for module in dequantizing_modules(self.model):
            module.dequantize = _scoped_call(module.dequantize, "dequant")  # an instance attribute, deleted on exit
            self._patched.append(module)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._patched:
            del module.dequantize
        self._handles, self._patched = [], []

    def _opener(self, category: str) -> Callable[..., None]:
        import torch

        def open_range(module: torch.nn.Module, _args: Any) -> None:
            opened = torch.profiler.record_function(range_name(category))
            opened.__enter__()
            self._open.setdefault(id(module), []).append(opened)

        return open_range

    def _closer(self, module: torch.nn.Module, _args: Any, _output: Any) -> None:
        ranges = self._open.get(id(module))
        if ranges:
            ranges.pop().__exit__(None, None, None)


def _scoped_call(function: Callable[..., Any], category: str) -> Callable[..., Any]:
    def scoped(*args: Any, **kwargs: Any) -> Any:
        with scope(category):
            return function(*args, **kwargs)

    return scoped


def fetched(batches: Any) -> Iterator[Any]:
    """Iterate `batches` with each fetch (the loader's work: reading, collating) inside the data range."""
    iterator = iter(batches)
    while True:
        with scope("data_host"):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()
