"""What a run prints besides its results: its own progress lines, no HTTP chatter, no credentials.

`redact` is the one place credentials are taken out of text: URLs with a user and password
(`--base-url http://user:pass@host/v1`) and key-like query parameters. Logs, error lines and
provenance pass through it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Annotated, Any

from pydantic import AfterValidator

# Loggers that log every request at INFO. Matched by prefix, so renamed successors (httpx2, httpcore2 in
# openai >= 3 and anthropic >= 2) stay quiet too; "fern" is the cohere SDK's.
HTTP_LOGGERS = ("httpx", "httpcore", "urllib3", "openai", "anthropic", "cohere", "fern")
QUIET_LOGGERS = (*HTTP_LOGGERS, "sentence_transformers")

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_KEY_PARAMETER = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|password|secret)=)[^&#\s]+")


def redact(text: str) -> str:
    """`text` with URL credentials replaced by `***`: `http://***@host`, `?api_key=***`."""
    return _KEY_PARAMETER.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def redact_data(value: Any) -> Any:
    """`redact` applied to every string inside dicts, lists and tuples (settings, model descriptions)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


# A result's settings: redacted whenever a result record is built, so no writer can forget to.
RedactedSettings = Annotated[dict[str, Any], AfterValidator(redact_data)]


class _QuietAndRedacted(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name.startswith(QUIET_LOGGERS):
            return False
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def quiet_weight_loading() -> None:
    """A log that is not a terminal gets no "Loading weights" bar per model: the stages' own progress says enough."""
    if not sys.stderr.isatty():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def configure_logging() -> None:
    """INFO lines on stderr for the stages' own loggers; HTTP request logs dropped; credentials redacted."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, _QuietAndRedacted) for existing in handler.filters):
            handler.addFilter(_QuietAndRedacted())
