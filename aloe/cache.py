"""A response cache: every reply stored the moment it arrives, so re-runs are free and interrupted runs resume.

One SQLite file per run directory, in autocommit mode. The key is the sha256 of the canonical JSON
of spec, messages, sampling parameters and sample index. Failures raise and are never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from aloe.errors import IncompleteBatch
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.messages import Message


def cache_key(spec: str, messages: Sequence[Message], params: SamplingParams, sample_index: int) -> str:
    payload = {"spec": spec, "messages": list(messages), "params": params.as_dict(), "sample": sample_index}
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, spec TEXT, reply TEXT)")

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Reply(**json.loads(row[0]), cached=True)

    def put(self, key: str, spec: str, reply: Reply) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, spec, reply) VALUES (?, ?, ?)",
                (key, spec, json.dumps(reply.as_dict())),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachedChatModel(ChatModel):
    """Wraps a backend: cached replies are returned as they are, only the rest reach the model."""

    def __init__(self, model: ChatModel, cache: ResponseCache):
        self.model = model
        self.cache = cache
        self.spec = model.spec
        self.identity = model.cache_identity()

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        indices = list(sample_indices) if sample_indices is not None else [0] * len(conversations)
        keys = [cache_key(self.identity, conv, params, index) for conv, index in zip(conversations, indices)]
        replies: list[Reply | None] = [self.cache.get(key) for key in keys]
        reported = getattr(self.model, "reported_models", None)
        if reported is not None:  # the backend's description then names the snapshots behind cached replies too
            reported.update(reply.model for reply in replies if reply is not None and reply.model)
        todo = [position for position, reply in enumerate(replies) if reply is None]
        if todo:

            def store(i: int, reply: Reply) -> None:
                # Called as each reply arrives, so an interrupted batch keeps what it finished.
                self.cache.put(keys[todo[i]], self.spec, reply)
                if on_reply is not None:
                    on_reply(todo[i], reply)

            try:
                fresh = self.model.generate(
                    [conversations[p] for p in todo], params, [indices[p] for p in todo], on_reply=store
                )
            except IncompleteBatch as exc:
                # Positions in the whole batch, cached replies included, for the stage that catches it.
                for position, reply in zip(todo, exc.replies):
                    replies[position] = reply
                raise IncompleteBatch(str(exc), replies, {todo[i]: why for i, why in exc.failures.items()}) from None
            for position, reply in zip(todo, fresh):
                replies[position] = reply
        return replies  # type: ignore[return-value]

    def describe(self):
        return self.model.describe()

    def cache_identity(self):
        return self.identity

    def __getattr__(self, name):
        return getattr(self.model, name)

