"""Exceptions that carry a one-line, user-facing message.

Scripts catch :class:`YolactError` at the top level and print ``error: <message>``
instead of a traceback; anything else is a bug and keeps its traceback.
"""


class YolactError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(YolactError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, value out of range)."""


class DataError(YolactError, ValueError):
    """A dataset, image or video cannot be read or is malformed."""


class CheckpointError(YolactError, ValueError):
    """A checkpoint is unreadable, unsafe, or does not match the model's config."""
