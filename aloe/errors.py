"""Exceptions a user can act on. Scripts turn them into one line and a non-zero exit."""


class AloeError(Exception):
    """Base class: the message says what went wrong and how to fix it."""


class ModelSpecError(AloeError):
    """A model spec that names nothing we can load."""


class ModelCallError(AloeError):
    """A model call that failed for good (bad key, bad request, retries exhausted)."""


class RecordError(AloeError):
    """A malformed input record; the message is `file:line: field: problem`."""


class TrainingError(AloeError):
    """A training setting or input that cannot work; raised before any training starts."""
