"""bench.measure.deploy.speed: serving figures of fakes whose cost is known (sleeps, or a clock the test drives), of a
real tiny causal LM for what only transformers can show (exactly new_tokens tokens, no warnings; no speed)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from types import SimpleNamespace

import pytest
import torch

from bench.measure.deploy import speed, timing

# A fake's sleeps measure at their length plus wake-up latency: about 0.1 ms typical on this loaded 2-core
# machine, 1 ms seen at worst. A median rarely sees the worst; a mean takes every stall in, so it gets more room.
MEDIAN_SLACK_S = 0.003
MEAN_SLACK_S = 0.006
QUICK = {"warmup": 1, "min_repeats": 8, "max_repeats": 20, "max_seconds": 0.5}
CPU = torch.device("cpu")


class SleepyClassifier(torch.nn.Module):
    """A forward pass costs 10 ms plus 1 ms per row; it notes the mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[bool, bool]] = set()  # (training, inference mode)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:  # no labels
        self.seen.add((self.training, torch.is_inference_mode_enabled()))
        time.sleep(0.010 + 0.001 * len(input_ids))
        return SimpleNamespace(logits=torch.zeros(len(input_ids), 2))


def _rows(count: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.ones(count, 6, dtype=torch.long), "attention_mask": torch.ones(count, 6),
            "labels": torch.zeros(count, dtype=torch.long)}


def test_classifier_latency_and_throughput_of_a_known_cost() -> None:
    model = SleepyClassifier()
    prefix = "deploy/merged16/"
    found = speed.serving_classifier(model, single=_rows(1), batch=_rows(8), device=CPU,
                                     autocast_dtype=torch.float32, prefix=prefix, **QUICK)
    names = [f"latency_{q}_ms{end}" for q in ("p50", "p90") for end in ("", "_low", "_high")]
    names += ["rows_per_s", "rows_per_s_low", "rows_per_s_high", "latency_n", "throughput_n"]
    assert sorted(found) == sorted(prefix + name for name in names)
    assert 11.0 <= found[f"{prefix}latency_p50_ms"] <= 11.0 + MEDIAN_SLACK_S * 1000
    assert found[f"{prefix}latency_p50_ms_low"] <= found[f"{prefix}latency_p50_ms"] <= found[f"{prefix}latency_p90_ms"]
    assert 8 / (0.018 + MEAN_SLACK_S) <= found[f"{prefix}rows_per_s"] <= 8 / 0.018  # 8 rows in 10 + 8 ms
    assert found[f"{prefix}rows_per_s_low"] <= found[f"{prefix}rows_per_s"] <= found[f"{prefix}rows_per_s_high"]
    assert found[f"{prefix}latency_n"] >= 8 and found[f"{prefix}throughput_n"] >= 8
    assert model.seen == {(False, True)} and model.training  # served in eval and inference mode, then put back


class SleepyGenerator(torch.nn.Module):
    """`generate` costs a prefill plus a time per new token and returns the prompt extended by them; it checks
    that it is asked for greedy decoding with the cache, exactly max_new_tokens."""

    def __init__(self, prefill_s: float, per_token_s: float, *, shortfall: int = 0, sleep=time.sleep) -> None:
        super().__init__()
        self.prefill_s, self.per_token_s, self.shortfall, self.sleep = prefill_s, per_token_s, shortfall, sleep

    def generate(self, *, input_ids, attention_mask, max_new_tokens, min_new_tokens, do_sample, num_beams,
                 use_cache, **_) -> torch.Tensor:
        assert (min_new_tokens, do_sample, num_beams, use_cache) == (max_new_tokens, False, 1, True)
        assert torch.is_inference_mode_enabled() and not self.training
        self.sleep(self.prefill_s + self.per_token_s * max_new_tokens)
        made = max_new_tokens - self.shortfall
        return torch.cat([input_ids, torch.zeros(1, made, dtype=input_ids.dtype)], dim=1)


PROMPT = {"input_ids": torch.ones(1, 5, dtype=torch.long), "attention_mask": torch.ones(1, 5, dtype=torch.long)}


def test_generator_speed_of_a_known_cost() -> None:
    """Prefill 10 ms and 4 ms a token, 5 tokens: first token at 14 ms, a whole call 30 ms."""
    found = speed.serving_generator(SleepyGenerator(0.010, 0.004), prompt=PROMPT, device=CPU,
                                    autocast_dtype=torch.float32, new_tokens=5, prefix="p/", **QUICK)
    assert 14.0 <= found["p/ttft_ms"] <= 14.0 + MEDIAN_SLACK_S * 1000
    assert found["p/ttft_ms_low"] <= found["p/ttft_ms"] <= found["p/ttft_ms_high"]
    assert 5 / (0.030 + MEAN_SLACK_S) <= found["p/gen_tokens_per_s"] <= 5 / 0.030
    # 4 tokens in the 16 ms between the medians; each median may be late by the slack.
    assert 4 / (0.016 + MEDIAN_SLACK_S) <= found["p/decode_tokens_per_s"] <= 4 / (0.016 - MEDIAN_SLACK_S)


def test_generator_figures_follow_exactly_from_the_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same arithmetic under a clock the test drives (powers of two, so exact): prefill 1/4 s, 1/8 s a token,
    5 tokens. Whole call 7/8 s, first token 3/8 s: 5 / (7/8) tokens/s overall, 4 / (4/8) = 8 decoding."""
    now = [0.0]
    monkeypatch.setattr(timing, "perf_counter", lambda: now[0])
    model = SleepyGenerator(0.25, 0.125, sleep=lambda seconds: now.__setitem__(0, now[0] + seconds))
    found = speed.serving_generator(model, prompt=PROMPT, device=CPU, autocast_dtype=torch.float32, new_tokens=5,
                                    prefix="p/", warmup=1, min_repeats=10, max_seconds=1e9)
    assert found == {"p/ttft_ms": 375.0, "p/ttft_ms_low": 375.0, "p/ttft_ms_high": 375.0,
                     "p/gen_tokens_per_s": 5 / 0.875, "p/gen_tokens_per_s_low": 5 / 0.875,
                     "p/gen_tokens_per_s_high": 5 / 0.875, "p/decode_tokens_per_s": 8.0, "p/ttft_n": 10.0,
                     "p/gen_n": 10.0}


def test_a_generator_that_stops_short_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="generate made 3 new tokens, not the 5 asked for"):
        speed.serving_generator(SleepyGenerator(0.0, 0.0, shortfall=2), prompt=PROMPT, device=CPU,
                                autocast_dtype=torch.float32, new_tokens=5, prefix="p/", **QUICK)


def _tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, use_cache=False)
    return LlamaForCausalLM(config)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def one_thread():
    """One torch thread, as the tiny test runs use (trainer.threads=1): two would fight the background load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_real_causal_lm_generates_exactly_new_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its end-of-sequence token is made the very token greedy decoding picks first, so only min_new_tokens
    keeps generate going; every call must still return exactly the tokens asked for, quietly."""
    model = _tiny_llama()
    first = model.generate(**PROMPT, max_new_tokens=1, do_sample=False)[0, -1]
    model.generation_config.eos_token_id = int(first)
    made: list[tuple[int, int]] = []  # (asked, returned) per call
    generate = model.generate

    def counting(**kwargs):
        output = generate(**kwargs)
        made.append((kwargs["max_new_tokens"], output.shape[1] - PROMPT["input_ids"].shape[1]))
        return output

    monkeypatch.setattr(model, "generate", counting)
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = speed.serving_generator(model, prompt=PROMPT, device=CPU, autocast_dtype=torch.float32,
                                            new_tokens=6, prefix="deploy/merged16/", warmup=1, min_repeats=4,
                                            max_repeats=6, max_seconds=0.5)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert {asked for asked, _ in made} == {1, 6} and all(asked == returned for asked, returned in made), made
    assert (records.messages, [str(warning.message) for warning in caught]) == ([], [])
    names = ["ttft_ms", "ttft_ms_low", "ttft_ms_high", "gen_tokens_per_s", "gen_tokens_per_s_low",
             "gen_tokens_per_s_high", "decode_tokens_per_s", "ttft_n", "gen_n"]
    assert sorted(found) == sorted(f"deploy/merged16/{name}" for name in names)
    # No speed claims on a real model under a background load, so two figures may lack a value: a rate's upper
    # end is unbounded when the mean's interval reaches zero, and decoding's rate is NaN when a stall puts the
    # median first token at or past the median whole call. Everything else is finite.
    loose = ("_per_s_high", "decode_tokens_per_s")
    assert all(math.isfinite(value) for name, value in found.items() if not name.endswith(loose)), found
    decode = found["deploy/merged16/decode_tokens_per_s"]
    assert math.isnan(decode) or 0 < decode < math.inf, found
    assert found["deploy/merged16/gen_tokens_per_s_high"] >= found["deploy/merged16/gen_tokens_per_s"] > 0
    assert not model.config.use_cache  # the run's own setting is left alone


def test_device_sync_waits_for_cuda_and_not_for_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    assert speed.device_sync("cpu") is None
    speed.device_sync(torch.device("cuda", 1))()
    assert synced == [torch.device("cuda", 1)]
