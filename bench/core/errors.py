"""The errors every layer raises and the command line turns into one line: a bad configuration value, and a
training loss that stopped being finite."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value; the CLI prints it as one line and exits with code 2."""


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""
