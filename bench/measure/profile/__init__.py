"""Where a training step's time goes: torch's profiler over a few steps after warm-up (`monitor.profile=true`),
the time split into categories a user reads (`bench.measure.profile.categories`), a trace that opens in Perfetto, and on
CUDA the allocator's memory history for the same steps.

    categories.py  what each category is, and which modules and ops belong to it
    scopes.py      the named ranges the categories are read from: module hooks while profiling, cheap helpers
    breakdown.py   profiler events -> milliseconds per category (pure: no profiler needed)
    profiler.py    the window of profiled steps, its artifacts and its metrics (`prof/<category>_ms`, `_pct`)
"""
