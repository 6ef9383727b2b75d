"""Progress of long loops (rounds, turns, batches) on stderr: done/total, rate and time left.

On a terminal it is a tqdm bar that clears itself when the loop ends, so a stage's one-line summary
stays the last line. Elsewhere (a log file, a CI job) a bar would flood the log with redraws, so it
is a plain line at most every `ALOE_PROGRESS_INTERVAL` seconds (default 30). `ALOE_PROGRESS=off`
turns it off.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}]"


class Progress:
    """`with Progress(total, "profiles", "personas", initial=seeds) as progress: ... progress.update(k)`."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.desc, self.unit, self.total, self.n, self.initial = desc, unit, total, initial, initial
        self.started = self.last_line = time.monotonic()
        enabled = enabled and os.environ.get("ALOE_PROGRESS", "on").lower() not in ("off", "0", "no", "false")
        terminal = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = float(os.environ.get("ALOE_PROGRESS_INTERVAL", 30)) if enabled and not terminal else None
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=f" {unit}", file=self.stream, leave=False,
                        dynamic_ncols=True, disable=not terminal)

    def update(self, count: int = 1) -> None:
        self.n += count
        self.bar.update(count)
        now = time.monotonic()
        if self.interval is not None and now - self.last_line >= self.interval:
            self.last_line = now
            print(self.line(now - self.started), file=self.stream, flush=True)

    def line(self, elapsed: float) -> str:
        return tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=f" {self.unit}",
                                 initial=self.initial, bar_format=PLAIN_FORMAT)

    def note(self, message: str, log: logging.Logger | None = None) -> None:
        """A line above the bar on a terminal (a plain log line would break the bar), else an INFO log line."""
        if not self.bar.disable:
            self.bar.write(message, file=self.stream)
        else:
            (log or logging.getLogger(__name__)).info(message)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
