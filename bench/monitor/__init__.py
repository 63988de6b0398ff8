"""Resource measurement around a run: peak memory now; sampling backends plug in beside it."""

from bench.monitor.peak import PeakMemory

__all__ = ["PeakMemory"]
