"""summary.md: what to pick and the known results checked first, then the tuned headline (when there is one), the
headline, the memory at the peak, the variants against their parent, where the time goes and the deployment cost,
as Markdown for a pull request or a terminal."""

from __future__ import annotations

import pandas as pd

from bench.report import advice, analyse, columns, fair_sections, memory, recommend, render, step_time, variants
from bench.report.deploy import Deployment, deploy_markdown
from bench.report.render import Missing
from bench.report.sections import has_test

LEFT_OUT = ("trainable_pct", "weight_bits_per_param", "model_bits_per_param")  # the page has them; too wide here


def summary(title: str, facts: list[tuple[str, str]], runs: pd.DataFrame, table: pd.DataFrame,
            several: dict[str, bool], deployed: Deployment, *, picks: list[recommend.Pick], checks: pd.DataFrame,
            absent: list[Missing]) -> str:
    """The whole file."""
    about = "\n".join(f"- {k}: {render.markdown_text(v)}" for k, v in facts)
    missing = ("Not in this report (the command that adds it): "
               + "; ".join(f"{m.heading} (`{m.command}`)" for m in absent) + ".\n\n") if absent else ""
    failed = analyse.failures(runs)
    tail = f"\n\n{len(failed)} run(s) did not finish; see index.html." if len(failed) else ""
    serving = deploy_markdown(deployed, several)
    serving = f"\n\n{serving}" if serving else ""
    return (f"# {render.markdown_text(title)}\n\n{about}\n\n{missing}{advice.markdown(picks, checks, table)}"
            f"{fair_sections.tuned_markdown(table, runs)}{_headline(table, runs, several)}{_at_peak(runs, table)}"
            f"{_variants(table, runs, several)}{step_time.markdown(table)}{serving}{tail}\n")


def _headline(table: pd.DataFrame, runs: pd.DataFrame, several: dict[str, bool]) -> str:
    untuned = table[table["stage"] == ""]
    tuned = bool(fair_sections.tuned_markdown(table, runs))
    if untuned.empty and tuned:
        return ""
    shown = [c for c in columns.headline_columns(**several, test=has_test(untuned)) if c.field not in LEFT_OUT]
    heading = "## Headline (untuned): each technique at its configured learning rate" if tuned else "## Headline"
    return (f"{heading}\n\nAccuracy in %: val is the validation split (eval/accuracy, what every choice is made on), "
            f"test the test split (test/accuracy); mean over seeds ± the 95 % Student-t half-width [low, high]. "
            f"Memory: the training tensor peak. Δ and ratios against full fine-tuning of the same model on the "
            f"same device; the speed ratio only where both were timed alone.\n\n"
            f"{render.markdown_table(untuned, shown)}")


def _at_peak(runs: pd.DataFrame, table: pd.DataFrame) -> str:
    parts = memory.breakdown(runs, table)
    if parts.empty:
        return ""
    return (f"\n\n## Memory at the peak\n\nMiB per category at the training tensor peak, means over seeds; phase and "
            f"module from the run named.\n\n{render.markdown_table(parts, columns.breakdown_columns())}")


def _variants(table: pd.DataFrame, runs: pd.DataFrame, several: dict[str, bool]) -> str:
    rows = variants.variant_comparison(table, runs)
    if rows.empty:
        return ""
    return (f"\n\n## Variants against their parent\n\n"
            f"{render.markdown_table(rows, columns.variant_columns(**several, test=has_test(rows)))}")
