"""Sentence embeddings and the incremental novelty filter that keeps a persona pool diverse.

The filter keeps the pool's normalized embedding matrix in memory and grows it as personas are
accepted, so every text is embedded exactly once; a candidate is compared against the whole pool
by matrix products over fixed-size chunks (memory stays bounded at any pool size).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aloe.errors import AloeError, ModelSpecError
from aloe.logs import quiet_weight_loading

DEFAULT_CHUNK_ROWS = 8192


class Embedder:
    """A sentence-transformers model behind a spec: `embedded` (all-MiniLM-L6-v2 from its wheel) or a path/hub id."""

    def __init__(self, spec: str, model, batch_size: int = 64):
        self.spec = spec
        self.model = model
        self.batch_size = batch_size
        self.dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                       else model.get_sentence_embedding_dimension())

    @classmethod
    def from_spec(cls, spec: str, device: str | None = None) -> "Embedder":
        if spec == "embedded":
            from aloe.embedded import embedded_embedder_path

            target = str(embedded_embedder_path())
        else:
            target = spec.removeprefix("hf:")
            if target.startswith((".", "/", "~")) and not Path(target).expanduser().exists():
                raise ModelSpecError(f"embedder path not found: {target!r} (use 'embedded' or a sentence-transformers folder)")
        from sentence_transformers import SentenceTransformer

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        quiet_weight_loading()
        try:
            model = SentenceTransformer(target, device=device)
        except (OSError, ValueError) as exc:
            raise ModelSpecError(f"cannot load embedder {spec!r}: {str(exc).splitlines()[0]} "
                                 "(use 'embedded' or a local sentence-transformers folder)") from None
        return cls(spec, model)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 embeddings, one row per text (shape (len(texts), dim))."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def describe(self) -> dict:
        return {"spec": self.spec, "dim": self.dim}


@functools.lru_cache(maxsize=4)
def load_embedder(spec: str = "embedded") -> Embedder:
    """Load each embedder spec once per process (tests and scripts share it)."""
    return Embedder.from_spec(spec)


def max_similarity(queries: np.ndarray, matrix: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: the max cosine similarity to any row of `matrix` and that row's index.

    Rows must be normalized. The product is taken over `chunk_rows` rows of the matrix at a time,
    so the scratch memory is len(queries) x chunk_rows floats whatever the matrix size.
    An empty matrix gives -inf and index -1.
    """
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    where = np.full(len(queries), -1, dtype=np.int64)
    for start in range(0, len(matrix), chunk_rows):
        block = queries @ matrix[start:start + chunk_rows].T
        arg = block.argmax(axis=1)
        value = block[np.arange(len(queries)), arg]
        better = value > best
        best[better] = value[better]
        where[better] = arg[better] + start
    return best, where


@dataclass
class Decision:
    """The filter's verdict on one candidate: kept iff `max_similarity` <= threshold."""

    text: str
    accepted: bool
    max_similarity: float  # to the pool and to candidates accepted before it; -1.0 for an empty pool
    nearest: str | None  # label of the most similar pool entry


class NoveltyFilter:
    """A pool's normalized embedding matrix, grown in place, and the novelty test against it.

    `add` puts texts into the pool unconditionally (seeds, a resumed output); `filter` embeds a
    round's candidates once, keeps each one whose max cosine similarity to the pool and to the
    candidates accepted before it in the same round is at most `threshold`, and adds the kept ones.
    """

    def __init__(self, embedder: Embedder | None, threshold: float = 0.6, dim: int | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, initial_capacity: int = 1024):
        if not 0 < threshold <= 1:
            raise AloeError(f"novelty threshold must be in (0, 1], got {threshold}")
        self.embedder = embedder
        self.threshold = threshold
        self.chunk_rows = chunk_rows
        self.dim = dim or embedder.dim
        self._matrix = np.zeros((initial_capacity, self.dim), dtype=np.float32)
        self.size = 0
        self.labels: list[str] = []

    @property
    def matrix(self) -> np.ndarray:
        """The pool's embeddings (a view, no copy)."""
        return self._matrix[:self.size]

    def __len__(self) -> int:
        return self.size

    def add(self, texts: Sequence[str], labels: Sequence[str] | None = None) -> None:
        self.add_embeddings(self.embedder.encode(texts), labels)

    def add_embeddings(self, vectors: np.ndarray, labels: Sequence[str] | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {vectors.shape}")
        needed = self.size + len(vectors)
        if needed > len(self._matrix):
            # Doubling keeps appends amortized O(1) per row; at most half the buffer is slack.
            grown = np.zeros((max(needed, 2 * len(self._matrix)), self.dim), dtype=np.float32)
            grown[:self.size] = self._matrix[:self.size]
            self._matrix = grown
        self._matrix[self.size:needed] = vectors
        self.size = needed
        start = len(self.labels)
        self.labels.extend(labels if labels is not None else (f"#{start + i}" for i in range(len(vectors))))

    def filter(self, texts: Sequence[str], labels: Sequence[str] | None = None) -> list[Decision]:
        """Embed the candidates once, decide each in order, and add the kept ones to the pool."""
        return self.filter_embeddings(texts, self.embedder.encode(texts), labels)

    def filter_embeddings(self, texts: Sequence[str], vectors: np.ndarray,
                          labels: Sequence[str] | None = None) -> list[Decision]:
        vectors = np.asarray(vectors, dtype=np.float32)
        labels = list(labels) if labels is not None else [f"#{self.size + i}" for i in range(len(texts))]
        to_pool, nearest = max_similarity(vectors, self.matrix, self.chunk_rows)
        # The round's candidates against each other: small (candidates x candidates), computed once.
        among = vectors @ vectors.T
        decisions: list[Decision] = []
        kept: list[int] = []
        for i, text in enumerate(texts):
            best, label = float(to_pool[i]), (self.labels[nearest[i]] if nearest[i] >= 0 else None)
            if kept:
                j = kept[int(np.argmax(among[i, kept]))]
                if among[i, j] > best:
                    best, label = float(among[i, j]), labels[j]
            if math.isinf(best):
                best = -1.0
            accepted = best <= self.threshold
            if accepted:
                kept.append(i)
            decisions.append(Decision(text, accepted, best, label))
        self.add_embeddings(vectors[kept], [labels[i] for i in kept])
        return decisions
