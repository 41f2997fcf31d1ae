"""The error types users see.

Anything raised as a `DistilqaError` is a problem with the user's input or environment, not a bug:
the CLI prints its message and exits with status 2, without a traceback.
"""


class DistilqaError(Exception):
    """Base class: a problem the user can fix, reported as one clear message."""


class DataError(DistilqaError):
    """A data file is unreadable, malformed or inconsistent."""


class ConfigError(DistilqaError):
    """A parameter or setting is out of range or inconsistent with another."""


class ModelError(DistilqaError):
    """A model or tokenizer directory is missing, unreadable or unsuitable."""
