"""Persona pools: reading them, asking a model for new personas, and parsing what it writes.

Two kinds of persona text (DESIGN section 3): *profiles* (objective daily-life facts) and
*personalities* (traits visible in conversation). Each kind is one entry of `KINDS`: its prompt
file and the length bounds a parsed candidate must meet.
"""

from __future__ import annotations

import hashlib
import time
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aloe.errors import RecordError
from aloe.jsonl import iter_records
from aloe.messages import Message
from aloe.prompts import render
from aloe.records import Persona


@dataclass(frozen=True)
class PersonaKind:
    name: str
    plural: str  # file and summary names: profiles.jsonl, personalities.jsonl
    prompt: str  # prompt file under aloe/prompts/
    min_words: int
    max_words: int
    tokens_per_persona: int  # reply budget per requested persona: the default --max-new-tokens is per_request x this
    default_seeds: str


KINDS = {
    # Seeds run 60-96 words (profiles) and 40-73 (personalities); the bounds leave room for
    # terser or wordier models while dropping fragments and run-on text.
    "profile": PersonaKind("profile", "profiles", "persona_profile", 25, 200, 120, "datasets/seed_profiles.jsonl"),
    "personality": PersonaKind("personality", "personalities", "persona_personality", 15, 150, 90, "datasets/seed_personalities.jsonl"),
}


# ---------------------------------------------------------------- pools


def load_pool(path: str | Path, allow_empty: bool = False) -> list[Persona]:
    """A persona pool: Persona records or the seed repository's bare JSON strings, ids unique."""
    records = []
    seen: dict[str, int] = {}
    for number, record in enumerate(iter_records(path, Persona, Persona.from_bare_string), start=1):
        if record.id in seen:
            raise RecordError(f"{path}: id: {record.id!r} appears twice (records {seen[record.id]} and {number})")
        seen[record.id] = number
        records.append(record)
    if not records and not allow_empty:
        raise RecordError(f"{path}: no records (a pool file holds one persona per line)")
    return records


def persona_id(kind: str, text: str) -> str:
    """Content-derived, so the same text gets the same id in every shard, run and merge."""
    return f"gen-{kind}-" + hashlib.sha1(" ".join(text.split()).lower().encode()).hexdigest()[:12]


# ---------------------------------------------------------------- requests


def request_messages(kind: PersonaKind, examples: Sequence[str], count: int) -> list[Message]:
    numbered = "\n\n".join(f"{i}. {' '.join(text.split())}" for i, text in enumerate(examples, start=1))
    return [{"role": "user", "content": render(kind.prompt, examples=numbered, count=count)}]


def example_rng(seed: int, shard: int, round_number: int, request: int) -> random.Random:
    # One stream per (seed, shard, round, request): a re-run of an interrupted round draws the same
    # examples, so its prompts hit the response cache; shards draw different examples.
    return random.Random(f"{seed}/{shard}/{round_number}/{request}")


def sample_examples(pool: Sequence[str], k: int, rng: random.Random) -> list[str]:
    return rng.sample(list(pool), k)


# ---------------------------------------------------------------- parsing

# An item marker at the start of a line: "1." "1)" "(1)" "1:" "#1" "- " "* " "• ", optionally in bold,
# or a label such as "Profile 3:" / "**Personality 2** -".
_NUMBER = r"(?:\(?\d{1,3}[.):\]]|#\d{1,3}[.):]?)"
_BULLET = r"[-*•–—+]"
_LABEL = r"(?:profile|personality|persona|person|user|character)\s*#?\s*\d{1,3}\s*[.:)\-–—]?"
_MARKER = re.compile(rf"^\s*(?:\*\*|__)?\s*(?:{_LABEL}|{_NUMBER}|{_BULLET}(?=\s))\s*(?:\*\*|__)?\s*[:.\-–—]?\s*", re.I)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s|[=\-_*]{3,}\s*$)")
_QUOTES = "\"'“”‘’«»`"


@dataclass
class ParsedReply:
    """Candidates found in one reply, and every piece dropped with the reason."""

    candidates: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (text, reason)

    def reasons(self) -> Counter:
        return Counter(reason.split(" (")[0] for _, reason in self.dropped)


def _split_items(text: str) -> tuple[list[str], list[str]]:
    """(items, pieces outside any item). Items: list entries if the reply is a list, else paragraphs, else lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if sum(bool(_MARKER.match(line)) and bool(_MARKER.sub("", line, count=1).strip()) or _is_label_only(line)
           for line in lines) >= 2:
        items: list[list[str]] = []
        outside: list[str] = []
        current: list[str] | None = None
        for line in lines:
            if _MARKER.match(line) and (_MARKER.sub("", line, count=1).strip() or _is_label_only(line)):
                current = [line]
                items.append(current)
            elif not line.strip():
                # A blank line right after a label-only line ("Profile 1:") keeps the item open.
                if current is not None and _is_label_only("\n".join(current)):
                    continue
                current = None
            elif current is not None and _continues(current, line):
                current.append(line)
            else:
                current = None
                outside.append(line)
        return ["\n".join(item) for item in items], outside
    paragraphs = [block for block in re.split(r"\n\s*\n", text) if block.strip()]
    if len(paragraphs) >= 2:
        return paragraphs, []
    return [line for line in lines if line.strip()], []


def _continues(item: list[str], line: str) -> bool:
    """Whether an unmarked line wraps the item above it, rather than being a closing remark after the list."""
    return _is_label_only("\n".join(item)) or line[:1].isspace() or not re.search(r"[.!?\"”')]\s*$", item[-1])


def _is_label_only(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and bool(_MARKER.match(stripped)) and not _MARKER.sub("", stripped, count=1).strip(" *_:.-")


def clean_candidate(item: str) -> str:
    """One list item as plain text: marker, label, markdown emphasis and wrapping quotes removed."""
    text = item.strip()
    for _ in range(3):  # small models echo the prompt's numbering as well as their own: "1. 1. A nurse..."
        text, found = _MARKER.subn("", text, count=1)
        if not found:
            break
    text = " ".join(re.sub(r"\*\*|__", "", text).split())
    quote = f"[{re.escape(_QUOTES)}]"
    if re.match(quote, text):
        text = re.sub(rf"^{quote}+\s*", "", text)
        text = re.sub(rf"\s*{quote}+([.,;]?)$", r"\1", text)
    elif re.search(rf"{quote}[.,;]?$", text) and sum(text.count(q) for q in _QUOTES) % 2 == 1:
        text = re.sub(rf"\s*{quote}([.,;]?)$", r"\1", text)
    return text.strip()


def parse_candidates(text: str, min_words: int, max_words: int, truncated: bool = False) -> ParsedReply:
    """Split a model's reply into persona candidates.

    Accepts numbered, bulleted, labelled, blank-line or line separated replies. Headings, lead-in
    lines ending in ':', text outside a list, duplicates and candidates outside [min_words,
    max_words] are dropped with a reason. With `truncated` (the reply hit its token limit) the
    last item is dropped as cut off.
    """
    parsed = ParsedReply()
    items, outside = _split_items(text)
    for piece in outside:
        parsed.dropped.append((piece.strip(), "text outside the list"))
    seen: set[str] = set()
    for position, item in enumerate(items):
        stripped = item.strip()
        if _HEADING.match(stripped) or _is_label_only(stripped):
            parsed.dropped.append((stripped, "header"))
            continue
        candidate = clean_candidate(item)
        words = len(candidate.split())
        if not candidate:
            parsed.dropped.append((stripped, "empty"))
        elif truncated and position == len(items) - 1:
            parsed.dropped.append((candidate, "cut off by --max-new-tokens"))
        elif candidate.endswith(":") and words <= 25:
            parsed.dropped.append((candidate, "header"))
        elif words < min_words:
            parsed.dropped.append((candidate, f"too short ({words} words < {min_words})"))
        elif words > max_words:
            parsed.dropped.append((candidate, f"too long ({words} words > {max_words})"))
        elif candidate.lower() in seen:
            parsed.dropped.append((candidate, "repeated in the same reply"))
        else:
            seen.add(candidate.lower())
            parsed.candidates.append(candidate)
    return parsed


# ---------------------------------------------------------------- growth


@dataclass(frozen=True)
class GrowthSettings:
    examples_per_prompt: int = 5
    per_request: int = 20
    requests_per_round: int = 4
    min_words: int = 25
    max_words: int = 200
    seed: int = 0
    shard: tuple[int, int] = (0, 1)  # (index, count): shards draw different examples and samples


@dataclass
class RoundResult:
    accepted: list[Persona]
    log: dict


class PoolGrowth:
    """Grows a pool round by round: one batched model call per round, then the novelty filter.

    `pool` holds every persona already in the output (seeds included) in file order; the novelty
    filter must already hold their embeddings (each text is embedded once per run).
    """

    def __init__(self, kind: PersonaKind, model, params, novelty, pool: Sequence[Persona], settings: GrowthSettings):
        self.kind = kind
        self.model = model
        self.params = params
        self.novelty = novelty
        self.settings = settings
        self.texts = [persona.text for persona in pool]
        self.ids = {persona.id for persona in pool}

    def requests(self, round_number: int) -> tuple[list[list[Message]], list[int]]:
        s = self.settings
        shard_index, shard_count = s.shard
        batch, indices = [], []
        for request in range(s.requests_per_round):
            examples = sample_examples(self.texts, s.examples_per_prompt,
                                       example_rng(s.seed, shard_index, round_number, request))
            batch.append(request_messages(self.kind, examples, s.per_request))
            # Unique per (round, shard, request), so a prompt that repeats is a new sample, not a cache hit.
            indices.append(((round_number * shard_count + shard_index) << 20) + request)
        return batch, indices

    def run_round(self, round_number: int, room: int) -> RoundResult:
        """Ask for new personas, keep the novel ones (at most `room`), and add them to the pool."""
        started = time.perf_counter()
        batch, indices = self.requests(round_number)
        replies = self.model.generate(batch, self.params, indices)
        generate_s = time.perf_counter() - started

        candidates: list[str] = []
        dropped: Counter = Counter()
        for reply in replies:
            parsed = parse_candidates(reply.text, self.settings.min_words, self.settings.max_words,
                                      truncated=reply.finish_reason == "length")
            candidates.extend(parsed.candidates)
            dropped.update(parsed.reasons())
        fresh = []
        for text in candidates:
            if persona_id(self.kind.name, text) in self.ids:
                dropped["already in the pool"] += 1
            else:
                fresh.append(text)

        filter_started = time.perf_counter()
        decisions = self.novelty.filter(fresh, [persona_id(self.kind.name, text) for text in fresh])
        filter_s = time.perf_counter() - filter_started
        kept = [decision for decision in decisions if decision.accepted]
        accepted = [
            Persona(id=persona_id(self.kind.name, d.text), text=d.text, source="generated", round=round_number,
                    max_similarity=round(d.max_similarity, 4))
            for d in kept[:room]
        ]
        for persona in accepted:
            self.texts.append(persona.text)
            self.ids.add(persona.id)
        rejected = [d for d in decisions if not d.accepted]
        similarities = [d.max_similarity for d in decisions]
        log = {
            "round": round_number,
            "requests": len(batch),
            "cached_replies": sum(reply.cached for reply in replies),
            "truncated_replies": sum(reply.finish_reason == "length" for reply in replies),
            "candidates": len(candidates) + sum(dropped.values()) - dropped["already in the pool"],
            "parsed": len(candidates),
            "dropped": dict(dropped),
            "novel": len(kept),
            "accepted": len(accepted),
            "over_target": len(kept) - len(accepted),
            "rejected_similar": len(rejected),
            "acceptance_rate": round(len(kept) / len(candidates), 4) if candidates else 0.0,
            "mean_max_similarity": round(sum(similarities) / len(similarities), 4) if similarities else None,
            "rejected_examples": [{"text": d.text[:160], "max_similarity": round(d.max_similarity, 4),
                                   "nearest": d.nearest} for d in rejected[:3]],
            "prompt_tokens": sum(reply.prompt_tokens for reply in replies),
            "completion_tokens": sum(reply.completion_tokens for reply in replies),
            "generate_s": round(generate_s, 3),
            "filter_s": round(filter_s, 4),
            "pool_size": len(self.texts),
        }
        return RoundResult(accepted, log)
