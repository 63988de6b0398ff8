"""Monitor tests: a package, so that its conftest.py gets a module name of its own (monitor.conftest)."""
