"""Generation-scored comparison on SmolLM2-135M-Instruct, offline on a CPU: full FT, LoRA and QLoRA against the
untrained model, on computed answers (`data=arith`, final number) and on the tweets answered by generation
(`data=sft-tweets data.scoring=generation`, label word).

Each cell is one `bench run` (the commands are printed with `--commands`; run them in any order, e.g. as two
chains, one per data set). The untrained rows are the same evaluation after one optimizer step at
`trainer.lr=1e-12`: bench has no zero-step run, and a step that small changes no weight at the float resolution
the model holds (an fp32 or bf16 weight of magnitude 1e-3 or more moves by less than half its last bit), so the
generated answers are the base model's own; `method=lora` gives the 16-bit base, `method=qlora` the 4-bit one.

One thread per run: on 2 cores shared with other work, two OpenMP threads per process waited on each other so
badly that one bf16 forward of SmolLM2 over 16 prompts of 60 tokens took 136 s against 3.7 s with one thread
(a decode step 13.4 s against 0.34 s), measured back to back on the loaded machine.

The table (`python benchmarks/generation_cpu.py --uri sqlite:///<store>`) gives test exact match with a 95 %
Wilson score interval over the test examples (one run per cell: the interval is over examples, not seeds).
"""

from __future__ import annotations

import argparse
import sys

from bench.core.intervals import wilson

COMMON = ["model=smollm2-135m", "trainer.epochs=1", "trainer.batch_size=8", "trainer.eval_batch_size=32",
          "trainer.threads=1", "data.general_eval_chunks=2", "tracker.log_model=false", "deploy.measure=false",
          "monitor.tensors=off"]  # no tensor accounting: this compares answers, and watched steps run ~2.6x slower
DATA = {
    "arith": ["data=arith", "data.max_train_samples=192", "data.max_eval_samples=16", "data.max_test_samples=80",
              "data.max_length=64", "data.max_new_tokens=16"],
    "sft-tweets": ["data=sft-tweets", "data.scoring=generation", "data.max_train_samples=192",
                   "data.max_eval_samples=16", "data.max_test_samples=80", "data.max_length=96",
                   "data.max_new_tokens=6"],
}
UNTRAINED = ["trainer.max_steps=1", "trainer.lr=1e-12"]
CELLS = [("untrained (16-bit)", "lora", UNTRAINED), ("full FT", "full", []), ("LoRA", "lora", []),
         ("QLoRA", "qlora", []), ("untrained (4-bit)", "qlora", UNTRAINED)]


def commands() -> list[str]:
    """Every cell's `bench run` line."""
    return [" ".join(["bench run", *COMMON, *data, f"method={method}", *extra, f"tracker.run_name={data[0][5:]}-"
                      f"{name.split()[0].lower()}{'-4bit' if '4-bit' in name else ''}"])
            for data in DATA.values() for name, method, extra in CELLS]


def table(uri: str) -> str:
    """The markdown table of the runs in the store at `uri`."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    runs = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    order = ["untrained (16-bit)", "full", "lora", "qlora", "untrained (4-bit)"]
    rows = []
    lines = ["| data | model | test exact match (95 % Wilson) | no answer | val exact match | train time | "
             "generation tokens/s (test) | run wall time |", "|---|---|---|---|---|---|---|---|"]
    for _, run in runs.iterrows():
        n = int(run["metrics.data/test_rows"])
        match = run["metrics.test/exact_match"]
        low, high = wilson(round(match * n) / n, n)
        untrained = float(run["params.trainer.lr"]) < 1e-9
        name = (f"untrained ({'4-bit' if run['tags.technique'] == 'qlora' else '16-bit'})" if untrained
                else run["tags.technique"])
        rows.append((run["params.data.name"], order.index(name) if name in order else len(order),
                     f"| {run['params.data.name']} | {name} | {match:.3f} [{low:.3f}, {high:.3f}] (n={n}) | "
                     f"{run['metrics.test/no_answer']:.3f} | {run['metrics.eval/exact_match']:.3f} | "
                     f"{run['metrics.train/time_s']:.0f} s | {run['metrics.test/generation_tokens_per_s']:.1f} | "
                     f"{run['metrics.time/total_s'] / 60:.1f} min |"))
    return "\n".join(lines + [line for *_, line in sorted(rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="the MLflow store the runs logged to")
    parser.add_argument("--commands", action="store_true", help="print every cell's bench run line")
    args = parser.parse_args()
    if args.commands or not args.uri:
        print("\n".join(commands()))
        return 0
    print(table(args.uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
