"""Resource measurement around a run: one backend chosen at start (NVML on CUDA, else the CPU), a sampled
timeline, exact peaks from kernel and allocator counters, and step timing."""

from bench.measure.monitor.monitor import Monitor
from bench.measure.monitor.peak import PeakMemory
from bench.measure.monitor.throughput import StepTimer

__all__ = ["Monitor", "PeakMemory", "StepTimer"]
