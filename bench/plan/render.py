"""`bench plan`'s output: a header of what all rows share, one row per configuration, then what each column means,
where the peaks fell, what was taken from shapes, which runs calibrated the memory terms and the times, and how
long the plan took."""

from __future__ import annotations

from typing import Any

from bench.plan.calibrate import LEVERS, duration
from bench.plan.cards import GIB, MIB
from bench.plan.engine import BATCH_SEARCH_LIMIT

CATEGORIES = ("params", "buffers", "grads", "optimizer", "activations", "temporaries", "other")
# the levers' names in the table ("optimizer" alone would read as the category of that name)
SHORT = {"gradient_checkpointing": "checkpointing", "optimizer": "optimizer kind", "grad_accum_steps": "accum steps"}
# overrides a descriptor already shows, so a comma list on them adds no second column
COVERED = {"model": "model", "method": "technique", "trainer.batch_size": "batch", "data.max_length": "seq",
           "data.packing": "packing", **{f"trainer.{name}": name for name in LEVERS}}


def gib(value: float | None, unit: int = GIB) -> str:
    """Bytes in `unit` (GiB unless told) with two decimals; `-` for none."""
    return "-" if value is None else f"{value / unit:,.2f}"


def unit_of(rows: list[dict[str, Any]]) -> tuple[int, str]:
    """GiB, or MiB when every peak is under a GiB (a test model's figures would all read 0.00 GiB)."""
    peaks = [row["plan"].peak_bytes for row in rows if row["plan"] is not None]
    return (MIB, "MiB") if peaks and max(peaks) < GIB else (GIB, "GiB")


def describe(row: dict[str, Any]) -> dict[str, str]:
    """What sets a row apart: model, technique, batch, sequence length, the levers, and any other swept key."""
    cfg = row["cfg"]
    found = {"model": cfg.model.name, "technique": cfg.method.title, "batch": str(cfg.trainer.batch_size),
             "seq": str(cfg.data.max_length)}
    for name in LEVERS:
        if hasattr(cfg.trainer, name):
            found[name] = str(getattr(cfg.trainer, name)).lower()
    if cfg.task == "causal_lm":  # packed: every row full of examples, not a worst case of padding
        found["packing"] = str(cfg.data.packing).lower()
    for key, value in row["swept"].items():
        if key.lstrip("+~") not in COVERED:
            found[key.lstrip("+~")] = value
    return found


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    """Left-aligned first columns (names), right-aligned numbers, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    texts = []
    for cells in [header, *lines]:
        parts = [cell.ljust(width) if index == 0 else cell.rjust(width)
                 for index, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        texts.append("  ".join(parts).rstrip())
    return texts


def fit_columns(cuda: bool) -> list[str]:
    """The figures that decide a fit, after the tensor peak's columns."""
    return ["allocator", *(["reserved"] if cuda else []), "process"]


def _row(row: dict[str, Any], keys: list[str], *, limit: Any, tokens: float | None, price: float | None,
         analytic: bool, unit: int, cuda: bool) -> list[str]:
    """One configuration's cells, in the header's order."""
    plan, described = row["plan"], describe(row)
    cells = [described.get(key, "") for key in keys]
    if plan is None:  # the error is among the details below the table
        figures = len(CATEGORIES) + analytic + 1 + len(fit_columns(cuda)) + (2 if limit is not None else 0)
        cells += ["failed"] + ["-"] * figures
    else:
        cells += [gib(plan.peak_bytes, unit), *(gib(plan.categories.get(name, 0), unit) for name in CATEGORIES)]
        cells += [gib(plan.analytic_peak_bytes, unit)] if analytic else []
        cells.append(plan.peak_phase)
        fit = plan.fit
        cells += [gib(fit.allocator_bytes, unit)] + ([gib(fit.reserved_bytes, unit)] if cuda else [])
        cells.append(gib(fit.process_bytes, unit))
        if limit is not None:
            largest, mark = row["largest"], "" if fit.overhead.calibrated else "*"
            cells += [("yes" if fit.process_bytes <= limit.bytes else "no") + mark,
                      f">={largest}" if largest >= BATCH_SEARCH_LIMIT else str(largest)]
    if tokens is not None:
        calibration = row["calibration"]
        seconds, cost = calibration.seconds(tokens), calibration.cost(tokens, price)
        cells += [f"{calibration.tokens_per_s:,.0f}" if calibration.tokens_per_s else "uncalibrated",
                  duration(seconds) if seconds is not None else "-", f"${cost:,.2f}" if cost is not None else "-"]
    return cells


def _header_line(rows: list[dict[str, Any]], keys: list[str], device: str) -> str:
    """What every row shares: the model (and where its numbers come from), task, batch, length, levers."""
    first, cfg = describe(rows[0]), rows[0]["cfg"]
    shared = [key for key in first if key not in keys]
    source = cfg.model.path or cfg.model.hub_id or f"{cfg.model.source}"
    words = {"model": f"model {first['model']} ({source})", "batch": f"batch {first['batch']}",
             "seq": f"{first['seq']} tokens per sequence"}
    parts = [words.get(key, f"{SHORT.get(key, key)} {first[key]}") for key in shared if key != "technique"]
    planned = "cuda (bf16, fused attention)" if device == "cuda" else "cpu (this machine's dtypes)"
    return f"bench plan: {', '.join(parts)}; task {cfg.task}; planned for {planned}"


def size(value: float) -> str:
    """`24.00 GiB`, or `230.40 MiB` under a GiB."""
    return f"{gib(value)} GiB" if value >= GIB else f"{gib(value, MIB)} MiB"


def _budget_line(limit: Any) -> str:
    return (f"memory: {limit.source}: {size(limit.memory_bytes)} - headroom {limit.headroom} "
            f"({size(limit.headroom_bytes)} kept free beyond the predicted process) = {size(limit.bytes)} for the "
            "process")


def _legend(rows: list[dict[str, Any]], *, limit: Any, tokens: float | None, analytic: bool, unit: str,
            cuda: bool) -> list[str]:
    """What each column means."""
    seq = rows[0]["cfg"].data.max_length
    power = 30 if unit == "GiB" else 20
    lines = [f"peak: the predicted training tensor peak in {unit} (2^{power} bytes), at the batch and length above; "
             "params ... other: the live tensors at that moment by category, as `bench run` measures them "
             "(mem/at_peak/*), summing to the peak; phase: the step's phase the peak falls in."]
    if analytic:
        lines.append("analytic: bench.plan.analytic's formula for the same configuration, a second opinion "
                     "(classification only; - where it does not apply).")
    runtime = "the CUDA context and the libraries' device memory" if cuda else "the interpreter, the libraries and " \
        "the data (RSS)"
    lines.append("allocator: the peak torch's allocator holds, the tensor peak plus what ops allocate beyond their "
                 + ("outputs; reserved: plus what the caching allocator keeps but cannot reuse; process: plus "
                    if cuda else "outputs; process: plus ") + f"{runtime}. The terms come from stored runs (below).")
    if limit is not None:
        lines.append(f"fits: process <= {size(limit.bytes)}; *: no stored run measured the terms, so the tensor peak "
                     f"alone is checked. max batch: the largest batch of full-length sequences (data.max_length, "
                     f"{seq} tokens in the first row) that fits; 0: not even one; >={BATCH_SEARCH_LIMIT}: the search "
                     "stops there.")
    if tokens is not None:
        lines.append(f"tokens/s: train/tokens_per_s measured in the store (mean of the runs below); time: "
                     f"{tokens:,.0f} tokens at that rate; cost: that time at --price-per-hour. uncalibrated: no run "
                     "measured this configuration on this device, so no time is given.")
    return lines


def _details(rows: list[dict[str, Any]], keys: list[str], tokens: float | None, uri: str) -> list[str]:
    """Where each peak fell, what was taken from shapes, and which runs calibrated each row."""
    def name(row: dict[str, Any]) -> str:
        described = describe(row)
        return " ".join(described[key] if key == "technique" else f"{key}={described[key]}" for key in keys)

    planned = [row for row in rows if row["plan"] is not None]
    lines = ["peak at: " + "; ".join(f"{name(row)}: {row['plan'].peak_module}" for row in planned)] if planned else []
    notes = list(dict.fromkeys(note for row in planned for note in row["plan"].notes))
    lines += [f"note: {note}" for note in notes]
    terms = {name(row): row["plan"].fit.overhead.describe() for row in planned}
    if len(set(terms.values())) == 1:
        lines.append(f"memory terms (store {uri or '-'}): {next(iter(terms.values()))}")
    elif terms:
        lines += [f"memory terms (store {uri or '-'}):"] + [f"  {row}: {text}" for row, text in terms.items()]
    lines += [f"failed: {name(row)}: {row['error']} (the planner cannot trace this configuration; BENCH_DEBUG=1 "
              "shows where)" for row in rows if row["plan"] is None]
    if tokens is not None:
        lines.append(f"calibration (store {uri}):")
        for row in rows:
            calibration = row["calibration"]
            source = (f"{len(calibration.runs)} run(s): {', '.join(calibration.runs)}" if calibration.tokens_per_s
                      else f"uncalibrated: {calibration.reason}")
            lines.append(f"  {name(row)}: {source}")
    return lines


def render(rows: list[dict[str, Any]], *, device: str, limit: Any, tokens: float | None, price: float | None,
           uri: str, seconds: float) -> str:
    """The whole output of `bench plan`."""
    from bench.tracking.store import redact_uri

    described = [describe(row) for row in rows]
    keys = ["technique", *(key for key in described[0] if key != "technique"
                           and len({d.get(key) for d in described}) > 1)]
    analytic = any(row["plan"] is not None and row["plan"].analytic_peak_bytes is not None for row in rows)
    unit, unit_name = unit_of(rows)
    header = [SHORT.get(key, key) for key in keys] + [f"peak {unit_name}", *CATEGORIES]
    header += ["analytic"] if analytic else []
    header += ["phase", *fit_columns(device == "cuda")] + (["fits", "max batch"] if limit is not None else [])
    header += ["tokens/s", "time", "cost"] if tokens is not None else []
    lines = [_header_line(rows, keys, device)]
    unchecked = "memory: none given (--gpu or --gpu-memory): fit and largest batch not checked"
    lines += [_budget_line(limit) if limit is not None else unchecked]
    lines += [""] + _table(header, [_row(row, keys, limit=limit, tokens=tokens, price=price, analytic=analytic,
                                         unit=unit, cuda=device == "cuda") for row in rows]) + [""]
    lines += _legend(rows, limit=limit, tokens=tokens, analytic=analytic, unit=unit_name, cuda=device == "cuda")
    lines += _details(rows, keys, tokens, redact_uri(uri))
    count = len(rows)
    lines.append(f"planned {count} configuration{'s' if count > 1 else ''} in {seconds:.1f} s"
                 + (" (largest batch search included)" if limit is not None else ""))
    return "\n".join(lines)
