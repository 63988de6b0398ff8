"""Three splits, train / validation / test, stratified by label and seeded, with near-duplicates removed across
them. Both tasks split this way: classification compares `text`, causal-LM SFT compares `prompt`.

- `train` is what the model learns from; `eval` is the validation split (the `eval/*` figures, during training
  and at the end: learning rates and every other choice are made on it); `test` is evaluated once, after
  training, and logged as `test/*`.
- A data set that comes split (local files `data.eval_path` / `data.test_path`, a hub data set's official
  splits `data.hub_eval_split` / `data.hub_test_split`) keeps its splits; a split it lacks is carved out of
  the train source, stratified by label and seeded by `data.split_seed`. `data.test_fraction` and
  `data.eval_fraction` are shares of the train source's rows.
- Near-duplicates: two rows are near-duplicates when their normalised forms (`normalise`) are equal. Test keeps
  all its rows, validation drops rows whose form is in test, train drops rows whose form is in validation or
  test; so no form appears in two splits. Within a split near-duplicates stay (they leak nothing). Counted
  over whole splits, before the caps (`data.max_*_samples`), which are then stratified samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bench.config import ConfigError, DataConfig

SPLITS = ("train", "eval", "test")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"@\w+")
_PUNCTUATION = re.compile(r"[^\w\s]|_")  # \w holds letters and digits of any script, and the underscore
_WHITESPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The near-duplicate form of a text: lower case; URLs (`http://…`, `https://…`, `www.…`) and @mentions
    removed; punctuation (anything but letters, digits and whitespace; emoji included) removed; whitespace runs
    collapsed into one space, ends trimmed. "@bob Loved it!!  http://t.co/x" and "loved it" share the form
    "loved it". An empty form (a text of only a link, a mention or emoji) says nothing and matches nothing."""
    text = _MENTION.sub(" ", _URL.sub(" ", text.lower()))
    return _WHITESPACE.sub(" ", _PUNCTUATION.sub("", text)).strip()


@dataclass
class ThreeSplits:
    """The rows of each split (frames with the compared column and `label`) and what the cleaning dropped."""

    train: Any
    eval: Any
    test: Any
    dropped: dict[str, int]  # near-duplicates dropped from each split


def split_metrics(rows: dict[str, int], dropped: dict[str, int]) -> dict[str, float]:
    """`data/<split>_rows` and `data/near_duplicates_dropped` (total and `_<split>`), logged by every run."""
    return {**{f"data/{name}_rows": rows[name] for name in SPLITS},
            "data/near_duplicates_dropped": sum(dropped.values()),
            **{f"data/near_duplicates_dropped_{name}": dropped[name] for name in SPLITS}}


def three_splits(frames: dict[str, Any], spec: DataConfig, *, key: str, floor: bool = False) -> ThreeSplits:
    """`frames`: the cleaned `train` source and, where the data set comes split, `eval` and `test` (None: carved
    out of train). `key`: the column compared for near-duplicates; the `label` column is the stratum. `floor`:
    refuse a validation or test split too small to score (`check_scored_rows`)."""
    carved = _carve(frames, spec)
    kept, dropped = drop_near_duplicates(carved, key=key)
    caps = {"train": spec.max_train_samples, "eval": spec.max_eval_samples, "test": spec.max_test_samples}
    final = {name: _take(kept[name], caps[name], seed=spec.split_seed) for name in SPLITS}
    if any(final[name].empty for name in SPLITS):
        counts = ", ".join(f"{len(final[name])} {name}" for name in SPLITS)
        raise ConfigError(f"data={spec.name}: a split is empty ({counts} rows; near-duplicates dropped: "
                          f"{sum(dropped.values())})")
    for name in ("eval", "test"):
        given, capped = frames.get(name) is not None, len(kept[name]) > len(final[name])
        check_scored_rows(final[name], name, spec, key=_size_key(name, spec, given=given, capped=capped),
                          refuse=floor and not (given or capped))
    return ThreeSplits(**final, dropped=dropped)


# An accuracy on n rows is uncertain by up to 1.96 * sqrt(0.25 / n) (the normal approximation's 95 % interval at
# an accuracy of 0.5, its widest): ±44 pp on 5 rows, ±20 pp on 24, ±6.9 pp on 200, ±3.1 pp on 1,000.
MIN_SCORED_ROWS = 5  # fewer, carved by a fraction from labelled text: refused (steps of 20+ pp, ±44 pp)
FEW_SCORED_ROWS = 200  # fewer: a warning with the count and the interval's half-width


def half_width_pp(rows: int) -> float:
    """The widest 95 % interval half-width, in percentage points, that an accuracy on `rows` rows has."""
    return 196 * (0.25 / rows) ** 0.5


def check_scored_rows(frame: Any, name: str, spec: DataConfig, *, key: str, refuse: bool = True) -> None:
    """The validation and test splits are what accuracies are computed on. With `refuse`, one under MIN_SCORED_ROWS
    rows is refused: a labelled data set's split that a fraction carved so small cannot have been meant (a cap,
    `data.max_*_samples`, or a file is what was asked for: tests and smoke runs shrink a run on purpose, and the
    caller passes refuse=False). Under FEW_SCORED_ROWS a warning on stderr gives the count and how wide the
    accuracy's interval is, for labelled rows (a causal LM's free-form answers are scored by loss)."""
    import sys

    rows, split = len(frame), {"eval": "validation", "test": "test"}[name]
    if rows < MIN_SCORED_ROWS and refuse:
        raise ConfigError(f"data={spec.name}: the {split} split has {rows} rows ({key}); an accuracy on fewer than "
                          f"{MIN_SCORED_ROWS} rows is not worth reporting (±{half_width_pp(rows):.0f} pp at 95 %); "
                          f"give it more rows")
    labelled = frame["label"].astype(str).ne("").any()
    if rows < FEW_SCORED_ROWS and labelled:
        print(f"warning: data={spec.name}: the {split} split has {rows} rows ({key}); an accuracy on {rows} rows is "
              f"uncertain by up to ±{half_width_pp(rows):.1f} pp (95 % interval), and {FEW_SCORED_ROWS} rows bring it "
              f"to ±{half_width_pp(FEW_SCORED_ROWS):.1f} pp", file=sys.stderr)


def _size_key(name: str, spec: DataConfig, *, given: bool, capped: bool) -> str:
    """The key that sized a split, for a message about its size."""
    if capped:
        return f"data.max_{name}_samples={getattr(spec, f'max_{name}_samples')}"
    if given:
        key = f"{name}_path" if spec.source == "local" else f"hub_{name}_split"
        return f"data.{key}={getattr(spec, key)}"
    return f"data.{name}_fraction={getattr(spec, f'{name}_fraction')}"


def drop_near_duplicates(frames: dict[str, Any], *, key: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Test keeps its rows; validation drops rows whose form is in test; train rows whose form is in either.
    Test is the split a comparison reports, so it is the one kept whole."""
    seen: set[str] = set()
    kept, dropped = {}, {}
    for name in ("test", "eval", "train"):
        frame = frames[name]
        forms = frame[key].astype(str).map(normalise)
        repeated = (forms.isin(seen) & (forms != "")).to_numpy()
        kept[name] = frame[~repeated].reset_index(drop=True)
        dropped[name] = int(repeated.sum())
        seen.update(forms[~repeated])
    return {name: kept[name] for name in SPLITS}, {name: dropped[name] for name in SPLITS}


def _carve(frames: dict[str, Any], spec: DataConfig) -> dict[str, Any]:
    """Carve the splits the data set lacks out of its train source: test first, then validation."""
    pool, total = frames["train"], len(frames["train"])
    parts = {}
    for name, key, fraction in (("test", "test_fraction", spec.test_fraction),
                                ("eval", "eval_fraction", spec.eval_fraction)):
        if frames.get(name) is not None:
            parts[name] = frames[name]
            continue
        size = max(1, round(fraction * total))
        try:
            pool, parts[name] = _stratified(pool, size=size, seed=spec.split_seed)
        except ValueError as error:
            raise ConfigError(f"data={spec.name}: cannot split {len(pool)} rows with data.{key}={fraction} "
                              f"({size} {name} rows): {error}") from None
    return {"train": pool, "eval": parts["eval"], "test": parts["test"]}


def _stratified(frame: Any, *, size: int, seed: int) -> tuple[Any, Any]:
    """(the rest, `size` rows), label shares kept where every label has two rows or more."""
    from sklearn.model_selection import train_test_split

    counts = frame["label"].value_counts()
    stratify = frame["label"] if len(counts) and counts.min() >= 2 else None
    rest, part = train_test_split(frame, test_size=size, random_state=seed, stratify=stratify)
    return rest.reset_index(drop=True), part.reset_index(drop=True)


def _take(frame: Any, cap: int | None, *, seed: int) -> Any:
    """At most `cap` rows: a stratified sample, since a given split may come sorted by label (IMDB's test)."""
    if cap is None or len(frame) <= cap:
        return frame.reset_index(drop=True)
    try:
        return _stratified(frame, size=cap, seed=seed)[1]
    except ValueError:  # fewer rows than labels, or a label too rare to stratify on: a seeded sample
        return frame.sample(n=cap, random_state=seed).reset_index(drop=True)
