"""Run files: where a run's outputs live, named after its --output, and the lock that keeps one writer.

Every generating stage writes a main file (--output) and files beside it named after it:

    runs/x/conversations.jsonl                 the main file (records, or a result JSON)
    runs/x/conversations.failures.jsonl        items that failed this run (retried by the next)
    runs/x/conversations.provenance.json       settings, models, prompts, versions
    runs/x/conversations.rounds.json           per-round figures (persona growth)
    runs/x/responses.sqlite                    the response cache, shared by the runs of a folder
    runs/x/conversations.shard-0-of-4.jsonl    worker 0 of 4 (`--shard 0/4`), with its own side files
                                               and its own cache (conversations.shard-0-of-4.responses.sqlite)

`RunFiles` is the one place those names are made; `merge_shards`-style steps find the shard files
through it, and `lock()` makes a second process on the same output stop with one line.
`open(overwrite)` is how a stage starts: the lock first, then (for --overwrite) the old run's files
cleared, so a second process started with --overwrite can never wipe a file the first is writing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter

SHARD_TAG = ".shard-{index}-of-{count}"
# What --overwrite clears beside the main file: the run's own files (never the response cache, which
# only replays answers, nor a shard's or another run's files).
OWN_FILES = ("failures.jsonl", "provenance.json", "rounds.json")


class RunFiles:
    """The files of one run, from its --output and its shard (None for an unsharded run).

    `suffix` is the main file's ending (default: --output's own, e.g. ".jsonl"); the ALOE evaluation
    passes ".json" so `results/aloe/x.json` and `results/aloe/x` name the same run.
    """

    def __init__(self, output: str | Path, shard: tuple[int, int] | None = None, suffix: str | None = None):
        output = Path(output)
        self.suffix = output.suffix if suffix is None else suffix
        self.output = output
        self.shard = shard
        # The stem is cut as a string: Path.with_suffix would take ".shard-0-of-2" for a suffix.
        base = output.name[:-len(self.suffix)] if self.suffix and output.name.endswith(self.suffix) else output.name
        self.base = base
        self.stem = base + (SHARD_TAG.format(index=shard[0], count=shard[1]) if shard else "")
        self.folder = output.parent

    @property
    def main(self) -> Path:
        """This run's main file: --output itself, or its shard's file."""
        return self.folder / f"{self.stem}{self.suffix}"

    def beside(self, ending: str) -> Path:
        """A file named after the run: `beside("failures.jsonl")` -> conversations.failures.jsonl."""
        return self.folder / f"{self.stem}.{ending}"

    @property
    def failures(self) -> Path:
        return self.beside("failures.jsonl")

    @property
    def provenance(self) -> Path:
        return self.beside("provenance.json")

    @property
    def rounds(self) -> Path:
        return self.beside("rounds.json")

    def cache(self, given: str | None = None) -> Path:
        """The response cache: `given` (--cache) if set; one per shard worker, so workers on one machine
        never wait on each other's SQLite lock; else one per folder, shared by its runs."""
        if given:
            return Path(given)
        return self.beside("responses.sqlite") if self.shard else self.folder / "responses.sqlite"

    @contextlib.contextmanager
    def failure_log(self) -> Iterator[Callable[..., None]]:
        """`with run.failure_log() as fail: fail(item_id, reason, turn=3)`: this run's failures file,
        started anew (a re-run retries what it lists) and removed again when nothing failed."""
        from aloe.jsonl import JsonlWriter

        with JsonlWriter(self.failures, overwrite=True) as writer:
            def fail(item_id: str, reason: str, **fields) -> None:
                writer.write({"id": item_id, **fields, "reason": reason,
                              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})

            try:
                yield fail
            finally:
                writer.close()
                if self.failures.stat().st_size == 0:
                    self.failures.unlink()

    # ------------------------------------------------------------ shards

    def shard_files(self) -> list[tuple[tuple[int, int], Path]]:
        """Every shard main file of this output that exists, as ((index, count), path), by count then index."""
        pattern = re.compile(re.escape(self.base) + r"\.shard-(\d+)-of-(\d+)" + re.escape(self.suffix) + "$")
        found = []
        for path in self.folder.glob(f"{glob_escape(self.base)}.shard-*-of-*{glob_escape(self.suffix)}"):
            match = pattern.match(path.name)
            if match:
                found.append(((int(match.group(1)), int(match.group(2))), path))
        return sorted(found, key=lambda entry: (entry[0][1], entry[0][0]))

    def complete_shards(self) -> list[RunFiles]:
        """The shards of one finished split (all of 0..n-1 of one n), in order; else an AloeError that says
        what is missing."""
        found = dict(self.shard_files())
        example = f"{self.base}.shard-0-of-2{self.suffix}"
        if not found:
            raise AloeError(f"no shard results such as {example} in {self.folder}; run each --shard i/n to the end first")
        counts = {count for _, count in found}
        if len(counts) != 1:
            raise AloeError(f"shard results of different splits ({', '.join(f'of-{n}' for n in sorted(counts))}) "
                            f"in {self.folder}; remove the stale ones")
        count = counts.pop()
        missing = [str(index) for index in range(count) if (index, count) not in found]
        if missing:
            raise AloeError(f"shards {', '.join(missing)} of {count} have no finished result in {self.folder}; "
                            "run them to the end first")
        return [RunFiles(self.output, (index, count), self.suffix) for index in range(count)]

    # ------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this run's lock while writing: a second process on the same output stops at once with one
        line naming the holder. The OS releases the lock when its holder dies, so a killed run never
        leaves a stale lock behind."""
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock_path = self.beside("lock")
        holder_path = self.beside("lock.holder")
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise AloeError(f"{self.main} is being written by another run ({_read_holder(holder_path)}); wait for it "
                            "to finish or stop it, or choose another --output") from None
        try:
            holder_path.write_text(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }), encoding="utf-8")
            yield
        finally:
            holder_path.unlink(missing_ok=True)
            lock.release()
            lock_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def open(self, overwrite: bool = False, also: tuple[str, ...] = ()) -> Iterator[None]:
        """Hold the lock (see `lock`) and, with `overwrite`, then clear the main file and the run's own
        files beside it, plus the `also` endings (e.g. "records.jsonl"). The order matters: clearing
        before the lock would let a second --overwrite run wipe the file a running one appends to."""
        with self.lock():
            if overwrite:
                for path in (self.main, *(self.beside(ending) for ending in (*OWN_FILES, *also))):
                    path.unlink(missing_ok=True)
            yield


    @contextlib.contextmanager
    def writers(self, items: str, saved: Callable[[], int]) -> Iterator[tuple[JsonlWriter, JsonlWriter]]:
        """The main file (appended to) and the failures file (started anew: the next run retries what it
        lists) while a stage generates. A model call that failed for good stops the stage with one line
        saying how many finished `items` are saved (`saved()`); an empty failures file is removed."""
        try:
            with JsonlWriter(self.main) as writer, JsonlWriter(self.failures, overwrite=True) as failures:
                try:
                    yield writer, failures
                except AloeError as exc:
                    raise AloeError(f"{exc} ({saved()} finished {items} are saved in {self.main}; "
                                    "re-run the same command to resume)") from None
        finally:
            if self.failures.exists() and self.failures.stat().st_size == 0:
                self.failures.unlink()  # no failures this run (or it was interrupted before any)


def _read_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def settings_differences(old: dict, new: dict) -> str:
    """What changed between two runs' settings, for the settings guard's one line."""
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
               if old.get(key) != new.get(key)]
    return ", ".join(changed) or "settings hash differs"


def settings_hash(identity: dict) -> str:
    """A short hash of the settings that decide what a run's numbers mean (not how fast it ran)."""
    import hashlib

    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
