"""Retrieved personas: a test prompt takes the persona of the most similar training prompt.

The authors never released their retrieval, so this is ours: prompts are embedded with a sentence
embedder (the embedded all-MiniLM-L6-v2 by default), similarity is cosine, and the item itself (same
id) or an exact duplicate prompt (same text up to case and spacing) is never returned, so a test
pair cannot retrieve its own gold persona. The "system" persona of a domain is the medoid of its
training chosen personas: the one most similar on average to all the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aloe.errors import AloeError
from aloe.tailoring.pairs import PreferencePair


@dataclass(frozen=True)
class Retrieved:
    persona: str
    source_id: str  # the training pair it came from
    similarity: float


def normalized_prompt(text: str) -> str:
    """A prompt up to case and spacing: what makes two prompts duplicates."""
    return " ".join(text.lower().split())


def retrieve(queries: Sequence[PreferencePair], pool: Sequence[PreferencePair], side: str, embedder) -> list[Retrieved]:
    """For each query pair, the `side` persona of the most similar pool prompt (never itself or a duplicate)."""
    candidates = [pair for pair in pool if pair.persona(side)]
    if not candidates:
        raise AloeError(f"no training pair has a {side} persona to retrieve: run data_generation/infer_personas.py "
                        "on the training pairs first")
    similarity = embedder.encode([pair.prompt for pair in queries]) @ embedder.encode([pair.prompt for pair in candidates]).T
    ids = np.array([pair.id for pair in candidates], dtype=object)
    texts = np.array([normalized_prompt(pair.prompt) for pair in candidates], dtype=object)
    results = []
    for row, query in enumerate(queries):
        scores = np.where((ids == query.id) | (texts == normalized_prompt(query.prompt)), -np.inf, similarity[row])
        best = int(np.argmax(scores))
        if not np.isfinite(scores[best]):
            raise AloeError(f"pair {query.id}: no other training prompt to retrieve a persona from")
        results.append(Retrieved(candidates[best].persona(side), candidates[best].id, float(scores[best])))
    return results


def medoid_personas(pool: Sequence[PreferencePair], embedder, default_domain: str) -> dict[str, str]:
    """Per domain, the training chosen persona most similar on average to the domain's others."""
    by_domain: dict[str, list[str]] = {}
    for pair in pool:
        if pair.chosen_persona:
            by_domain.setdefault(pair.domain or default_domain, []).append(pair.chosen_persona)
    medoids = {}
    for domain, personas in by_domain.items():
        vectors = embedder.encode(personas)
        medoids[domain] = personas[int(np.argmax((vectors @ vectors.T).mean(axis=1)))]
    return medoids
