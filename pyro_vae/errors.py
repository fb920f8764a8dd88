"""The library's exception types.

Every error a user can cause (a bad config, a malformed data file, a diverging run) is one of
these, with a message that says what was wrong and how to fix it; the CLI prints the message
alone, without a traceback.
"""


class PyroVAEError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(PyroVAEError, ValueError):
    """A config value, name or option is invalid."""


class DataError(PyroVAEError, ValueError):
    """A data set is missing, malformed, or does not fit the likelihood."""


class TrainingError(PyroVAEError, RuntimeError):
    """Training cannot go on (a NaN loss, a run directory that cannot be resumed)."""
