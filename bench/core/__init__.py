"""The bottom layer: what every other layer may use and which knows nothing of runs. Errors (`errors`), named
profiler ranges (`ranges`), files inside installed packages (`paths`) and Student-t intervals (`intervals`).
It imports no other bench package."""
