"""Full fine-tuning: every parameter trains, in the run's 16-bit dtype where the device has one. Nothing is
adapted, so none of LoRA's knobs or hooks apply: `bench.models.build` loads the base and trains it whole, and the
report measures every other technique against it (`bench.techniques.REFERENCE`)."""

from __future__ import annotations

from bench.techniques.base import Technique

TECHNIQUE = Technique(name="full", label="Full fine-tuning", summary="every parameter trains", knobs=frozenset(),
                      uses_adapter=False, baseline=True, order=0)
