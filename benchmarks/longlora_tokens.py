"""LongLoRA's S²-Attn vs full attention: training tokens/s against sequence length, on this machine.

Two measurements per sequence length (batch 1):
- model: one training step (forward + backward, no optimizer step) of a SmolLM2-135M-shaped Llama (hidden 576,
  9 heads, 3 key/value heads, intermediate 1536, vocabulary 49152, tied embeddings) with FEWER LAYERS (4 of
  30 by default, to stay within minutes on a CPU), random weights, set up as `method=longlora` trains it:
  LoRA r=8 on q/k/v/o plus trainable embedding and norms (`longlora_peft_options`). The two variants share
  the model; only `attn_implementation` differs (`longlora_s2` vs `sdpa`).
- attention: one layer's attention function alone (forward + backward), q/k/v laid out as the model's
  projections produce them.

Each variant gets one untimed warm-up step per length; the timed steps then alternate S²/full, so a shared
machine's drifting load hits both alike; the figure is the median. Torch runs on `--threads` threads (2: the
cores this machine has). The load average before and after each length is recorded: on a busy machine the
absolute numbers fall, and S² (more, smaller kernels) suffers more than full attention, since each parallel
kernel waits for both threads; attention alone is therefore also timed on 1 thread (`--attention-threads`).

    python benchmarks/longlora_tokens.py                        # 512..4096, 4 layers, 3 timed steps
    python benchmarks/longlora_tokens.py --lengths 512 1024 --layers 2 --steps 2

Results go to reports/perf/longlora_tokens.json and longlora_tokens.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.techniques.impl.longlora import ATTENTION_NAME, enable_s2_attention, group_size, longlora_peft_options

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("s2", "full")
SMOLLM2_SHAPE = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
                 "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0,
                 "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


def build_model(layers: int, ratio: float) -> Any:
    """The SmolLM2 shape with `layers` layers, LoRA + embedding + norms trainable, S²-Attn registered."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE, num_hidden_layers=layers, attn_implementation="sdpa"))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM", **longlora_peft_options(base))
    model = get_peft_model(base, lora)
    enable_s2_attention(model, group_ratio=ratio)
    return model.train()


def model_step(model: Any, variant: str, tokens: torch.Tensor) -> Callable[[], float]:
    """A timed forward + backward of the whole model under one attention implementation."""
    def step() -> float:
        model.get_base_model().set_attn_implementation(ATTENTION_NAME if variant == "s2" else "sdpa")
        start = time.perf_counter()
        model(input_ids=tokens, labels=tokens).loss.backward()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        return elapsed
    return step


class _Attention(torch.nn.Module):
    """What an attention function reads from a SmolLM2 attention module."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.longlora_group_ratio = 3, True, ratio


def attention_step(variant: str, seq_len: int, ratio: float) -> Callable[[], float]:
    """A timed forward + backward of one layer's attention function on fresh q/k/v."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bench.techniques.impl.longlora import s2_attention_forward

    function = s2_attention_forward if variant == "s2" else sdpa_attention_forward
    module = _Attention(ratio).train()

    def step() -> float:
        # [B, T, H, D] storage viewed as [B, H, T, D]: the layout the model's projections hand over.
        query, key, value = (torch.randn(1, seq_len, heads, 64, requires_grad=True).transpose(1, 2)
                             for heads in (9, 3, 3))
        start = time.perf_counter()
        output, _ = function(module, query, key, value, None, scaling=64 ** -0.5)
        output.sum().backward()
        return time.perf_counter() - start
    return step


def alternate(steps: dict[str, Callable[[], float]], timed: int) -> dict[str, float]:
    """One warm-up per variant, then `timed` alternating rounds; the median seconds per variant."""
    for step in steps.values():
        step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(timed):
        for name, step in steps.items():
            seconds[name].append(step())
    return {name: statistics.median(values) for name, values in seconds.items()}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    model = build_model(args.layers, args.ratio)
    rows = []
    for seq_len in args.lengths:
        load_before = _load()
        tokens = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (1, seq_len), generator=torch.Generator().manual_seed(1))
        step_s = alternate({v: model_step(model, v, tokens) for v in VARIANTS}, args.steps)
        attention_s = alternate({v: attention_step(v, seq_len, args.ratio) for v in VARIANTS}, args.attention_steps)
        row = {"seq_len": seq_len, "group_size": group_size(seq_len, args.ratio),
               "model_step_s": step_s, "model_tokens_per_s": _rate(seq_len, step_s),
               "attention_step_s": attention_s, "attention_tokens_per_s": _rate(seq_len, attention_s),
               "loadavg_before": load_before, "loadavg_after": _load()}
        row["model_speedup"] = round(step_s["full"] / step_s["s2"], 3)
        row["attention_speedup"] = round(attention_s["full"] / attention_s["s2"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def measure_attention(args: argparse.Namespace, threads: int) -> list[dict[str, Any]]:
    """Attention-only again on `threads` threads: on a crowded machine fewer threads wait less for each other."""
    torch.set_num_threads(threads)
    rows = []
    for seq_len in args.lengths:
        load_before = _load()
        seconds = alternate({v: attention_step(v, seq_len, args.ratio) for v in VARIANTS}, args.attention_steps)
        rows.append({"seq_len": seq_len, "attention_tokens_per_s": _rate(seq_len, seconds),
                     "attention_speedup": round(seconds["full"] / seconds["s2"], 3),
                     "loadavg_before": load_before, "loadavg_after": _load()})
        print(json.dumps(rows[-1]), flush=True)
    torch.set_num_threads(args.threads)
    return rows


def _rate(seq_len: int, seconds: dict[str, float]) -> dict[str, float]:
    return {name: round(seq_len / value, 1) for name, value in seconds.items()}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    """Machine, load, versions and workload: what a reader needs to judge the numbers."""
    from bench.tracking.provenance import git_sha, hardware, package_versions

    shown = ("torch", "transformers", "peft", "python")
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_sha": git_sha(), "command": " ".join(sys.argv),
            **hardware(torch.device("cpu")), **{k: v for k, v in package_versions().items()
                                                  if k.split("/")[1] in shown},
            "platform": platform.platform(), "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "model": f"SmolLM2-135M shape, {args.layers} of 30 layers, random weights", "batch_size": 1,
            "group_ratio": args.ratio, "warmup_steps": 1, "timed_steps": args.steps,
            "attention_timed_steps": args.attention_steps}


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "longlora_tokens.json").write_text(json.dumps(result, indent=2) + "\n")
    c = result["conditions"]
    lines = ["# LongLoRA S²-Attn vs full attention: training tokens/s", "",
             f"`{c['command']}` at {c['date']}, git {c['git_sha']}.", "",
             f"{c['model']}; LoRA r=8 (q/k/v/o) + embedding + norms trainable; batch 1; group = "
             f"{c['group_ratio']} of the sequence; median of {c['timed_steps']} timed steps (attention: "
             f"{c['attention_timed_steps']}) after 1 warm-up, S² and full alternating; {c['hw/cpu']}, nproc "
             f"{c['nproc']}, {c['torch_threads']} torch threads; torch {c.get('version/torch')}, "
             f"transformers {c.get('version/transformers')}, peft {c.get('version/peft')}.", "",
             "| tokens | group | model S² tok/s | model full tok/s | speedup | attention S² tok/s "
             "| attention full tok/s | speedup | load avg before / after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        m, a = r["model_tokens_per_s"], r["attention_tokens_per_s"]
        lines.append(f"| {r['seq_len']} | {r['group_size']} | {m['s2']} | {m['full']} | {r['model_speedup']}x "
                     f"| {a['s2']} | {a['full']} | {r['attention_speedup']}x "
                     f"| {r['loadavg_before']} / {r['loadavg_after']} |")
    for other in result["attention_other_threads"]:
        lines += ["", f"Attention only, {other['threads']} torch thread(s), same protocol:", "",
                  "| tokens | S² tok/s | full tok/s | speedup | load avg before / after |", "|---|---|---|---|---|"]
        for r in other["rows"]:
            rate = r["attention_tokens_per_s"]
            lines.append(f"| {r['seq_len']} | {rate['s2']} | {rate['full']} | {r['attention_speedup']}x "
                         f"| {r['loadavg_before']} / {r['loadavg_after']} |")
    lines += ["", "Speedup = full step time / S² step time. Model steps: forward + backward, no optimizer step. "
              "A load average above the core count (nproc) means other work shared the CPU while this ran: "
              "absolute tokens/s are then low, and with 2 threads S² loses most (likely because each of its more "
              "numerous, smaller kernels waits for both threads to be scheduled); the 1-thread attention table "
              "shows the algorithm's own curve."]
    (out / "longlora_tokens.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--attention-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention-threads", type=int, nargs="*", default=[1],
                        help="also time attention alone on these thread counts")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"conditions": conditions(args), "rows": measure(args)}
    result["attention_other_threads"] = [{"threads": threads, "rows": measure_attention(args, threads)}
                                         for threads in args.attention_threads]
    write(result, args.out)
    print((args.out / "longlora_tokens.md").read_text())


if __name__ == "__main__":
    main()
