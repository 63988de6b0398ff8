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


def three_splits(frames: dict[str, Any], spec: DataConfig, *, key: str) -> ThreeSplits:
    """`frames`: the cleaned `train` source and, where the data set comes split, `eval` and `test` (None: carved
    out of train). `key`: the column compared for near-duplicates; the `label` column is the stratum."""
    carved = _carve(frames, spec)
    kept, dropped = drop_near_duplicates(carved, key=key)
    caps = {"train": spec.max_train_samples, "eval": spec.max_eval_samples, "test": spec.max_test_samples}
    final = {name: _take(kept[name], caps[name], seed=spec.split_seed) for name in SPLITS}
    if any(final[name].empty for name in SPLITS):
        counts = ", ".join(f"{len(final[name])} {name}" for name in SPLITS)
        raise ConfigError(f"data={spec.name}: a split is empty ({counts} rows; near-duplicates dropped: "
                          f"{sum(dropped.values())})")
    return ThreeSplits(**final, dropped=dropped)


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
