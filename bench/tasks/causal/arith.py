"""A seeded generator of arithmetic word problems whose answers are computed: the data of `data=arith`.

Each problem adds, subtracts (never below zero) or multiplies two- and three-digit numbers in one of a few
sentence patterns; the reference answer is the working and its result, e.g. `23 + 45 = 68`, so generation scoring
with `data.answer_rule=final_number` reads the result. The rows ship with bench as `arith.jsonl` beside this module
(`question`, `answer`), written by

    python -m bench.tasks.causal.arith        # ROWS problems from SEED; tests check the file is exactly this output

so every machine trains and tests on the same problems, offline, and anyone can regenerate them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 2026
ROWS = 2000
FILE = Path(__file__).with_name("arith.jsonl")
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Juno", "Kofi", "Lena")
ITEMS = ("apple", "book", "coin", "marble", "pencil", "sticker", "stamp", "shell", "card", "bead")


def problem(rng: random.Random) -> dict[str, str]:
    """One problem and its worked answer, drawn from `rng`."""
    name, item, kind = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(("add", "sub", "mul"))
    if kind == "mul":
        a, b = rng.randint(10, 99), rng.randint(2, 9)
        return {"question": f"{name} buys {a} bags with {b} {item}s in each bag. How many {item}s does {name} buy?",
                "answer": f"{a} * {b} = {a * b}"}
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    if kind == "add":
        return {"question": f"{name} has {a} {item}s and gets {b} more. How many {item}s does {name} have now?",
                "answer": f"{a} + {b} = {a + b}"}
    a, b = max(a, b), min(a, b)
    return {"question": f"{name} has {a} {item}s and gives {b} of them away. How many {item}s are left?",
            "answer": f"{a} - {b} = {a - b}"}


def problems(rows: int = ROWS, seed: int = SEED) -> list[dict[str, str]]:
    """`rows` problems, the same ones for the same seed on every machine and Python version."""
    rng = random.Random(seed)
    return [problem(rng) for _ in range(rows)]


def jsonl(rows: list[dict[str, str]]) -> str:
    """The rows as the shipped file holds them: one JSON object per line."""
    return "".join(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    FILE.write_text(jsonl(problems()), encoding="utf-8")
    print(f"wrote {ROWS} problems (seed {SEED}) to {FILE}")
