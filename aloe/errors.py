"""Exceptions a user can act on. Scripts turn them into one line and a non-zero exit."""


class AloeError(Exception):
    """Base class: the message says what went wrong and how to fix it."""


class ModelSpecError(AloeError):
    """A model spec that names nothing we can load."""


class ModelCallError(AloeError):
    """A model call that failed for good (bad key, bad request, retries exhausted)."""


class IncompleteBatch(ModelCallError):
    """Some requests of a batch failed after their retries (transient faults); the others finished.

    `replies` holds one entry per conversation of the batch (None where it failed) and `failures`
    maps those positions to why. A stage that can go on without some items catches this and counts
    them as failed (a re-run asks them again); any other caller stops with its one-line message,
    the finished replies already in the response cache.
    """

    def __init__(self, message: str, replies: list, failures: dict[int, str]):
        super().__init__(message)
        self.replies = replies
        self.failures = failures


class RecordError(AloeError):
    """A malformed input record; the message is `file:line: field: problem`."""


class TrainingError(AloeError):
    """A training setting or input that cannot work; raised before any training starts."""
