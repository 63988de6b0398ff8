"""The bottom layer: what every other layer may use and which knows nothing of runs. Errors (`errors`), named
profiler ranges (`ranges`), files inside installed packages (`paths`), Student-t intervals (`intervals`) and the
registry of every metric bench logs (`metrics`, its table in `metrics.toml`).
It imports no other bench package."""
