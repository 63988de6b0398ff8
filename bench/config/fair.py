"""The fair comparison's `fair:` section (`experiment=fair-minilm`): what is compared, the learning-rate grids and
the seeds. `bench.run.fair` runs the comparison; this is only its shape and its checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.config.bounds import check_bounds
from bench.core.errors import ConfigError
from bench.techniques import NAMES

# The comparison's stages: rates tuned on validation (the grid, then finer rounds), the chosen rates over seeds, and
# each chosen configuration re-timed alone on the machine (its speed, time and energy measured without a neighbour).
TUNE, FINAL, RETIME = "tune", "final", "retime"


@dataclass(frozen=True)
class FairConfig:
    """The `fair:` section of an experiment: what is compared, the grids, the seeds."""

    techniques: list[str]  # in report order
    grid: dict[str, list[float]]  # per technique, its learning rates (the same number for each), log-spaced
    tune_seed: int = 0  # stage 1's one seed; not among `seeds`, so no final run repeats the run its rate was chosen on
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # stage 2's seeds
    report: bool = True  # write the report at the end
    refine_rounds: int = 2  # after the grid: at most this many rounds of finer rates around each best (0: grid alone)
    retime: bool = True  # at the end, each chosen configuration once more, alone on the machine (seed: seeds[0])
    # Set by the orchestrator on the stage sweeps it starts; null when a user starts the comparison.
    id: str | None = None  # the comparison's id, tag `fair/id`
    stage: str | None = None  # tune, final or retime
    rate: int | None = None  # tune: the index into the technique's grid, or into its `refine` rates
    round: int | None = None  # tune: the round of finer rates (1, 2, ...); null: the grid
    refine: dict[str, list[float]] | None = None  # a round of finer rates: each technique's new rates
    chosen: dict[str, float] | None = None  # final and retime: each technique's chosen rate
    # final and retime: the largest ratio between each chosen rate and a tried neighbour (absent at a grid's edge)
    resolution: dict[str, float] | None = None
    settled: dict[str, bool] | None = None  # final and retime: both neighbours within noise of the chosen rate

    def __post_init__(self) -> None:
        if not self.techniques:
            raise ConfigError("fair.techniques is empty; list the techniques to compare, e.g. [full,lora,qlora]")
        for name in self.techniques:
            if name not in NAMES:
                raise ConfigError(f"fair.techniques: {name!r} is not a technique; choose from: {', '.join(NAMES)}")
            if not self.grid.get(name):
                raise ConfigError(f"fair.grid has no learning rates for {name!r}; give e.g. fair.grid.{name}=[...]")
        sizes = {len(self.grid[name]) for name in self.techniques}
        if len(sizes) > 1:
            raise ConfigError(f"fair.grid: every technique needs the same number of rates (one Hydra grid for all); "
                              f"got {dict((n, len(self.grid[n])) for n in self.techniques)}")
        if any(float(lr) <= 0 for name in self.techniques for lr in self.grid[name]):
            raise ConfigError("fair.grid: every learning rate must be > 0")
        if not self.seeds:
            raise ConfigError("fair.seeds is empty; give the final stage's seeds, e.g. [1,2,3]")
        if self.stage not in (None, TUNE, FINAL, RETIME):
            raise ConfigError(f"fair.stage={self.stage!r} is not valid; the orchestrator sets it (tune, final or "
                              "retime)")
        check_bounds("fair", vars(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FairConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"unknown keys {[f'fair.{k}' for k in unknown]}; valid keys: {', '.join(sorted(names))}")
        return cls(**raw)

    @property
    def rates_per_technique(self) -> int:
        return len(self.grid[self.techniques[0]])
