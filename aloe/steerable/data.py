"""Steerable preference data: users' choices between two options, one JSONL file per split.

A record is one user's choice on one pair of options, `{"user", "pair_id", "option_a", "option_b",
"choice"}`, with `choice` 0 when the user preferred `option_a` and 1 for `option_b`. Options are
feature vectors (a number for the scalar experiment, an embedding for texts); `meta.json` beside the
splits names the kind, the feature size, the embedder and the provenance. The same pair appears once
per user who judged it, so users who disagree on a pair hold opposite choices for one `pair_id`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from aloe.errors import AloeError, RecordError
from aloe.jsonl import JsonlWriter, read_records, write_json
from aloe.records import Record

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"


class Comparison(Record):
    """One user's choice between two options (0: option_a preferred, 1: option_b preferred)."""

    user: str = Field(min_length=1)
    pair_id: str = Field(min_length=1)
    option_a: list[float] = Field(min_length=1)
    option_b: list[float] = Field(min_length=1)
    choice: int = Field(ge=0, le=1)
    text_a: str | None = None  # the options' texts, where the options are texts (NP-DPO and the text baseline read them)
    text_b: str | None = None
    prompt: str | None = None

    @field_validator("option_b")
    @classmethod
    def _same_size(cls, value, info):
        if "option_a" in info.data and len(value) != len(info.data["option_a"]):
            raise ValueError(f"has {len(value)} features but option_a has {len(info.data['option_a'])}")
        return value


@dataclass
class Split:
    """A split as arrays: row i is one user's choice on one pair (what episodes are drawn from)."""

    option_a: np.ndarray  # (n, d) float32
    option_b: np.ndarray  # (n, d) float32
    choice: np.ndarray  # (n,) int64
    user: np.ndarray  # (n,) int64, index into `users`
    pair: np.ndarray  # (n,) int64, index into `pair_ids`
    users: list[str]
    pair_ids: list[str]
    texts: list[tuple[str | None, str | None, str | None]] | None = None  # (prompt, text_a, text_b) per row

    def __len__(self) -> int:
        return len(self.choice)

    @property
    def dim(self) -> int:
        return self.option_a.shape[1]

    def rows_by_user(self) -> dict[int, np.ndarray]:
        return {u: np.flatnonzero(self.user == u) for u in range(len(self.users))}

    @classmethod
    def from_records(cls, records: Sequence[Comparison]) -> "Split":
        users = sorted({r.user for r in records})
        pair_ids = sorted({r.pair_id for r in records})
        user_index = {u: i for i, u in enumerate(users)}
        pair_index = {p: i for i, p in enumerate(pair_ids)}
        has_text = any(r.text_a is not None for r in records)
        return cls(
            option_a=np.asarray([r.option_a for r in records], dtype=np.float32),
            option_b=np.asarray([r.option_b for r in records], dtype=np.float32),
            choice=np.asarray([r.choice for r in records], dtype=np.int64),
            user=np.asarray([user_index[r.user] for r in records], dtype=np.int64),
            pair=np.asarray([pair_index[r.pair_id] for r in records], dtype=np.int64),
            users=users, pair_ids=pair_ids,
            texts=[(r.prompt, r.text_a, r.text_b) for r in records] if has_text else None,
        )


def write_split(path: str | Path, records: Iterable[Comparison | dict]) -> int:
    count = 0
    with JsonlWriter(path, overwrite=True) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count


def write_dataset(output: str | Path, splits: dict[str, list[Comparison]], meta: dict) -> dict[str, int]:
    """Write `train.jsonl`, `val.jsonl`, `test.jsonl` and `meta.json`; returns the record count per split."""
    output = Path(output)
    counts = {name: write_split(output / f"{name}.jsonl", splits[name]) for name in SPLITS}
    write_json(output / META_FILE, {**meta, "counts": counts})
    return counts


def split_path(data_dir: str | Path, split: str) -> Path:
    path = Path(data_dir) / f"{split}.jsonl"
    if not Path(data_dir).is_dir():
        raise AloeError(f"{data_dir}: not a data directory (write one with data_generation/synthetic_preferences.py)")
    if not path.is_file():
        raise AloeError(f"{data_dir}: no {split} split ({path.name} is missing); a data directory holds "
                        f"{', '.join(s + '.jsonl' for s in SPLITS)}")
    return path


def read_split(data_dir: str | Path, split: str) -> Split:
    """The split's records as arrays; every record is validated and all share one feature size."""
    path = split_path(data_dir, split)
    records = read_records(path, Comparison)
    dim = len(records[0].option_a)
    for number, record in enumerate(records, start=1):
        if len(record.option_a) != dim:
            raise RecordError(f"{path}:{number}: option_a: has {len(record.option_a)} features, the first record has {dim}")
    return Split.from_records(records)


def read_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg})") from None


# ---------------------------------------------------------------- what the data allows


def agreement_rate(split: Split) -> float:
    """Share of pairs on which every user who judged them made the same choice."""
    by_pair: dict[int, set[int]] = defaultdict(set)
    for pair, choice in zip(split.pair.tolist(), split.choice.tolist()):
        by_pair[pair].add(choice)
    return float(np.mean([len(choices) == 1 for choices in by_pair.values()]))


def user_agnostic_ceiling(split: Split) -> float:
    """The best accuracy a model blind to the user can reach on this split's records.

    Per pair it predicts the majority choice over the records of that pair (a tie scores one half),
    which is the optimum for any predictor that sees only the options.
    """
    votes = np.zeros((len(split.pair_ids), 2))
    np.add.at(votes, (split.pair, split.choice), 1)
    # A tie scores one half on each of its records, which max() gives too (half the votes).
    return float(votes.max(axis=1).sum() / votes.sum())


def oracle_accuracy(split: Split) -> float:
    """The accuracy of a predictor that knows the user: the majority per (user, pair), from the data."""
    votes: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for user, pair, choice in zip(split.user.tolist(), split.pair.tolist(), split.choice.tolist()):
        votes[(user, pair)][choice] += 1
    return float(sum(max(v) for v in votes.values()) / len(split))
