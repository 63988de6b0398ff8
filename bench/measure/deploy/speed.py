"""Serving speed of a model, as metric dicts: latency and throughput of a classifier, time to first token and
tokens per second of a causal LM. Every figure comes with its 95 % interval (`_low`, `_high`) and the number of
timed calls behind it (`_n`); see bench.measure.deploy.timing for what the intervals are.

Figures are per forward pass or per `generate` call of the model as it would be served: eval mode,
`torch.inference_mode()`, the run's autocast dtype, the KV cache on, inputs moved to the device first.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bench.measure.deploy.timing import Interval, Quantile, Timing, time_calls

if TYPE_CHECKING:
    import torch

MS = 1000.0


def device_sync(device: torch.device) -> Callable[[], None] | None:
    """What waits for a device's queued work: CUDA and MPS run kernels asynchronously, so a call returns before
    its work is done; the CPU needs nothing (None)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return None


@contextlib.contextmanager
def _serving(model: torch.nn.Module, *, device: torch.device, autocast_dtype: torch.dtype) -> Iterator[None]:
    """The model in eval mode under inference mode and autocast (off for float32), put back as it was after."""
    import torch

    device = torch.device(device)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32)
    try:
        with torch.inference_mode(), autocast:
            yield
    finally:
        model.train(was_training)


def _on_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Model inputs on the device, without `labels`: serving has none, and a loss would be extra work."""
    return {key: value.to(device) for key, value in inputs.items() if key != "labels"}


def _rows(inputs: dict[str, Any]) -> int:
    return int(next(iter(inputs.values())).shape[0])


def serving_classifier(model: torch.nn.Module, *, single: dict[str, Any], batch: dict[str, Any], device: torch.device,
                       autocast_dtype: torch.dtype, prefix: str, **timing_options: Any) -> dict[str, float]:
    """Latency of one row (`single`, batch size 1: p50 and p90 in ms) and throughput of a batch (`batch`:
    rows / mean time per call) of a classifier's forward pass. `timing_options` go to `time_calls`."""
    single, batch = _on_device(single, device), _on_device(batch, device)
    if _rows(single) != 1:
        raise ValueError(f"`single` must hold one row, it holds {_rows(single)}")
    sync = device_sync(device)
    with _serving(model, device=device, autocast_dtype=autocast_dtype):
        latency = time_calls(lambda: model(**single), sync=sync, **timing_options)
        throughput = time_calls(lambda: model(**batch), sync=sync, **timing_options)
    return {**_milliseconds(f"{prefix}latency_p50_ms", latency.p50),
            **_milliseconds(f"{prefix}latency_p90_ms", latency.p90),
            **_figure(f"{prefix}rows_per_s", _rate(_rows(batch), throughput)),
            f"{prefix}latency_n": float(latency.n), f"{prefix}throughput_n": float(throughput.n)}


def serving_generator(model: torch.nn.Module, *, prompt: dict[str, Any], device: torch.device,
                      autocast_dtype: torch.dtype, new_tokens: int,
                      prefix: str, **timing_options: Any) -> dict[str, float]:
    """Greedy generation of exactly `new_tokens` tokens after one prompt: time to first token (prefill plus one
    token, p50 in ms), tokens per second of the whole call (new_tokens / mean time) and of decoding alone
    ((new_tokens - 1) / (median whole call - median time to first token)). `timing_options` go to `time_calls`."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be at least 2 to time decoding apart from the first token: {new_tokens}")
    prompt = _on_device(prompt, device)
    sync = device_sync(device)
    with _serving(model, device=device, autocast_dtype=autocast_dtype):
        _check_generates(model, prompt, new_tokens)
        first = time_calls(lambda: _generate(model, prompt, 1), sync=sync, **timing_options)
        whole = time_calls(lambda: _generate(model, prompt, new_tokens), sync=sync, **timing_options)
    decode_s = whole.p50.value - first.p50.value
    return {**_milliseconds(f"{prefix}ttft_ms", first.p50),
            **_figure(f"{prefix}gen_tokens_per_s", _rate(new_tokens, whole)),
            f"{prefix}decode_tokens_per_s": (new_tokens - 1) / decode_s if decode_s > 0 else math.nan,
            f"{prefix}ttft_n": float(first.n), f"{prefix}gen_n": float(whole.n)}


def _generate(model: torch.nn.Module, prompt: dict[str, Any], new_tokens: int) -> Any:
    """Greedy decoding of exactly `new_tokens` tokens. bench trains with `config.use_cache=False`, so the cache
    is asked for here; min_new_tokens keeps an early end-of-sequence token from cutting the work short, and
    passing the pad token keeps transformers from warning that it picked one."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    pad = getattr(config, "pad_token_id", None)
    pad = pad if pad is not None else eos
    if isinstance(pad, list):
        pad = pad[0]
    return model.generate(**prompt, do_sample=False, num_beams=1, use_cache=True, max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=pad)


def _check_generates(model: torch.nn.Module, prompt: dict[str, Any], new_tokens: int) -> None:
    """Once, outside the timing: the figures mean what they say only if generate made exactly that many tokens."""
    output = _generate(model, prompt, new_tokens)
    sequences = getattr(output, "sequences", output)
    made = int(sequences.shape[-1]) - int(prompt["input_ids"].shape[-1])
    if made != new_tokens:
        raise RuntimeError(f"generate made {made} new tokens, not the {new_tokens} asked for: the tokens per "
                           "second would be wrong")


def _rate(work: int, timing: Timing) -> Interval:
    """Work per second from the mean seconds per call; the interval is the mean's, inverted (unbounded above
    when the mean's interval reaches zero; NaN from a single call, which has none)."""
    mean = timing.mean
    high = math.inf if mean.low <= 0 else work / mean.low  # NaN stays NaN: `NaN <= 0` is False
    return Interval(work / mean.value, work / mean.high, high)


def _milliseconds(name: str, quantile: Quantile) -> dict[str, float]:
    return {name: quantile.value * MS, f"{name}_low": quantile.low * MS, f"{name}_high": quantile.high * MS}


def _figure(name: str, interval: Interval) -> dict[str, float]:
    return {name: interval.value, f"{name}_low": interval.low, f"{name}_high": interval.high}
