"""Where users and their choices come from: the scalar experiment, text users, ALOE conversations, UltraFeedback.

Each kind becomes the same thing: comparisons per split (see aloe.steerable.data) written with a
meta.json that names the kind, the feature size, the embedder, the users and what was skipped.
Text options are embedded once each, by a sentence embedder or a language model's last-token state.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aloe.errors import AloeError
from aloe.jsonl import read_records
from aloe.prompts import prompt_hash, render
from aloe.provenance import provenance
from aloe.records import Record
from aloe.steerable.data import SPLITS, Comparison, Split, agreement_rate, write_dataset
from aloe.steerable.synthetic import TEXT_ATTRIBUTES, scalar_splits, text_choices, text_users

KINDS = ("scalar", "text", "aloe", "ultrafeedback")
SAMPLE_FILE = Path(__file__).resolve().parents[2] / "datasets" / "steerable" / "ultrafeedback_sample.jsonl"
HUB_DATASET = "openbmb/UltraFeedback"
UF_ATTRIBUTES = ("helpfulness", "honesty", "truthfulness", "instruction_following")
OPTION_PROMPT = "steerable_option"  # how a (prompt, response) is shown to the embedder
SPLIT_SHARES = (0.8, 0.1, 0.1)


@dataclass
class SourceOptions:
    seed: int = 0
    pairs: int = 20_000
    source: str = str(SAMPLE_FILE)
    attributes: tuple[str, ...] = tuple(TEXT_ATTRIBUTES)
    conflicting_share: float | None = None
    conversations: str | None = None
    min_pairs: int = 4
    subset: str = "all"
    embedder: str = "embedded"
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- UltraFeedback's schema


class Rating(Record):
    Rating: str | int


class Completion(Record):
    response: str
    model: str | None = None
    annotations: dict[str, Rating]


class RatedPrompt(Record):
    """One UltraFeedback row: an instruction and its rated completions."""

    instruction: str
    completions: list[Completion]
    source: str | None = None


def rating(completion: Completion, attribute: str) -> int | None:
    value = completion.annotations.get(attribute)
    try:
        return int(value.Rating) if value is not None else None
    except ValueError:  # UltraFeedback marks unrated completions "N/A"
        return None


def read_rated_prompts(source: str) -> list[RatedPrompt]:
    if source == "hub":
        try:
            from datasets import load_dataset

            rows = load_dataset(HUB_DATASET, split="train")
        except Exception as exc:  # offline, missing, or a network error of any kind
            raise AloeError(f"cannot load {HUB_DATASET} from the hub ({type(exc).__name__}); "
                            f"pass --source with a JSONL file in its schema, e.g. {SAMPLE_FILE.name}") from None
        return [RatedPrompt.model_validate(row) for row in rows]
    return read_records(source, RatedPrompt)


# ---------------------------------------------------------------- embedding options


def embed_texts(texts: Sequence[str], spec: str) -> tuple[np.ndarray, dict]:
    """Features for each text: a sentence embedder, or `lm:<spec>` for a causal LM's last-token hidden state."""
    unique = list(dict.fromkeys(texts))
    if spec.startswith("lm:"):
        vectors, described = _last_token_states(unique, spec.removeprefix("lm:"))
    else:
        from aloe.sentence_embeddings import load_embedder

        embedder = load_embedder(spec)
        vectors, described = embedder.encode(unique), embedder.describe()
    index = {text: i for i, text in enumerate(unique)}
    return vectors[[index[t] for t in texts]], described


def _last_token_states(texts: Sequence[str], spec: str, batch_size: int = 16) -> tuple[np.ndarray, dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aloe.models.local import local_path

    path = local_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                                truncation=True, max_length=512)
            hidden = model(**encoded, output_hidden_states=True).hidden_states[-1]
            # The last text token of each row (right padding), not the first padding slot.
            last = encoded["attention_mask"].sum(1) - 1
            out.append(hidden[torch.arange(len(last)), last].float().numpy())
    return np.concatenate(out).astype(np.float32), {"spec": f"lm:{spec}", "dim": int(out[0].shape[1]),
                                                     "state": "last layer, last text token"}


def option_text(prompt: str, response: str) -> str:
    return render(OPTION_PROMPT, prompt=prompt, response=response)


# ---------------------------------------------------------------- splitting


def split_groups(groups: Sequence[str], seed: int) -> dict[str, str]:
    """Assign whole groups (prompts, users) to train/val/test 80/10/10, each split non-empty when there are 3+."""
    ordered = sorted(set(groups))
    if len(ordered) < 3:
        raise AloeError(f"need at least 3 groups to split into train/val/test, got {len(ordered)}")
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(SPLIT_SHARES[1] * len(ordered)))
    n_test = max(1, round(SPLIT_SHARES[2] * len(ordered)))
    assignment = {g: "test" for g in ordered[:n_test]}
    assignment |= {g: "val" for g in ordered[n_test:n_test + n_val]}
    assignment |= {g: "train" for g in ordered[n_test + n_val:]}
    return assignment


def _pairs_from_choices(items: list[dict], split_of: dict[str, str], spec: str) -> dict[str, list[Comparison]]:
    """Embed every option once and build the comparisons; `items` hold user, pair_id, group, prompt, texts, choice."""
    texts = [option_text(item["prompt"], item[side]) for item in items for side in ("text_a", "text_b")]
    vectors, _ = embed_texts(texts, spec)
    # Replies to one prompt embed close together, so their differences are tiny next to the shared part;
    # standardizing each dimension by the train split's statistics makes them visible to the networks.
    train_rows = np.repeat([split_of[item["group"]] == "train" for item in items], 2)
    mean, std = vectors[train_rows].mean(0), vectors[train_rows].std(0) + 1e-6
    vectors = (vectors - mean) / std
    out: dict[str, list[Comparison]] = {name: [] for name in SPLITS}
    for i, item in enumerate(items):
        out[split_of[item["group"]]].append(Comparison(
            user=item["user"], pair_id=item["pair_id"], option_a=vectors[2 * i].tolist(),
            option_b=vectors[2 * i + 1].tolist(), choice=item["choice"], prompt=item["prompt"],
            text_a=item["text_a"], text_b=item["text_b"]))
    return out


# ---------------------------------------------------------------- the kinds


def _text_items(options: SourceOptions) -> list[dict]:
    rng = random.Random(options.seed)
    users = text_users(options.attributes)
    items = []
    for row in read_rated_prompts(options.source):
        group = "p-" + hashlib.sha1(row.instruction.encode()).hexdigest()[:10]
        for i, j in itertools.combinations(range(len(row.completions)), 2):
            a, b = row.completions[i].response, row.completions[j].response
            if rng.random() < 0.5:  # which reply is option a is random, so "always a" learns nothing
                a, b = b, a
            choices = text_choices([a], [b], users)
            for user, (choice,) in choices.items():
                if choice is not None:
                    items.append({"user": user, "pair_id": f"{group}-{i}{j}", "group": group, "prompt": row.instruction,
                                  "text_a": a, "text_b": b, "choice": choice})
    return keep_conflicting_share(items, options.conflicting_share, rng)


def keep_conflicting_share(items: list[dict], share: float | None, rng: random.Random) -> list[dict]:
    """Drop pairs so that `share` of the kept pairs are ones on which some users disagree."""
    if share is None:
        return items
    if not 0 <= share <= 1:
        raise AloeError(f"--conflicting-share must be in [0, 1], got {share}")
    by_pair: dict[str, list[dict]] = {}
    for item in items:
        by_pair.setdefault(item["pair_id"], []).append(item)
    conflicting = [p for p, rows in by_pair.items() if len({r["choice"] for r in rows}) > 1]
    agreeing = [p for p, rows in by_pair.items() if len({r["choice"] for r in rows}) == 1]
    if share in (0, 1):
        keep = agreeing if share == 0 else conflicting
    else:
        # The largest set with that share: limited by whichever group runs out first.
        total = min(len(conflicting) / share, len(agreeing) / (1 - share))
        keep = rng.sample(conflicting, round(total * share)) + rng.sample(agreeing, round(total * (1 - share)))
    kept = set(keep)
    return [item for item in items if item["pair_id"] in kept]


def _ultrafeedback_items(options: SourceOptions) -> list[dict]:
    rng = random.Random(options.seed)
    items = []
    for row in read_rated_prompts(options.source):
        group = "p-" + hashlib.sha1(row.instruction.encode()).hexdigest()[:10]
        for i, j in itertools.combinations(range(len(row.completions)), 2):
            ci, cj = row.completions[i], row.completions[j]
            prefs = {}
            for attribute in UF_ATTRIBUTES:
                ri, rj = rating(ci, attribute), rating(cj, attribute)
                if ri is not None and rj is not None and ri != rj:
                    prefs[attribute] = int(rj > ri)  # 1: completion j preferred
            if not _in_subset(prefs, options.subset):
                continue
            swap = rng.random() < 0.5
            a, b = (cj.response, ci.response) if swap else (ci.response, cj.response)
            for attribute, choice in prefs.items():
                items.append({"user": attribute, "pair_id": f"{group}-{i}{j}", "group": group, "prompt": row.instruction,
                              "text_a": a, "text_b": b, "choice": 1 - choice if swap else choice})
    return items


def _in_subset(prefs: dict[str, int], subset: str) -> bool:
    if subset == "hh":  # helpfulness and honesty both decided, and opposite
        return {"helpfulness", "honesty"} <= prefs.keys() and prefs["helpfulness"] != prefs["honesty"]
    if subset == "hht":  # the three decided and not unanimous
        keys = ("helpfulness", "honesty", "truthfulness")
        return set(keys) <= prefs.keys() and len({prefs[k] for k in keys}) > 1
    return bool(prefs)


def _aloe_items(options: SourceOptions) -> tuple[list[dict], dict]:
    """Each persona (profile + personality) is a user; each turn's preferred/rejected replies are one choice."""
    from aloe.jsonl import read_records
    from aloe.records import Conversation

    if not options.conversations:
        raise AloeError("--kind aloe needs --conversations FILE (an ALOE conversation file)")
    rng = random.Random(options.seed)
    items = []
    for conversation in read_records(options.conversations, Conversation, unique_ids=True):
        user = "u-" + hashlib.sha1(f"{conversation.profile}\n{conversation.personality}".encode()).hexdigest()[:10]
        for k, turn in enumerate(conversation.conversations):
            preferred, rejected = turn.assistant.preferred, turn.assistant.rejected
            if preferred == rejected:
                continue
            choice = int(rng.random() < 0.5)
            a, b = (rejected, preferred) if choice else (preferred, rejected)
            items.append({"user": user, "pair_id": f"{conversation.id}-t{k + 1}", "group": user,
                          "prompt": turn.user, "text_a": a, "text_b": b, "choice": choice})
    counts: dict[str, int] = {}
    for item in items:
        counts[item["user"]] = counts.get(item["user"], 0) + 1
    enough = {u for u, n in counts.items() if n >= options.min_pairs}
    skipped = len(counts) - len(enough)
    if not enough:
        raise AloeError(f"{options.conversations}: no user has {options.min_pairs} or more choices "
                        f"(most: {max(counts.values(), default=0)}); lower --min-pairs or add conversations")
    return [item for item in items if item["user"] in enough], {"skipped_users": skipped}


def build_dataset(kind: str, options: SourceOptions, output: str | Path) -> tuple[dict[str, int], dict]:
    """Build the comparisons of `kind` and write the data directory; returns (counts per split, meta)."""
    extra: dict = {}
    embedder = None
    if kind == "scalar":
        splits = scalar_splits(options.pairs, options.seed)
    else:
        if kind == "text":
            items = _text_items(options)
        elif kind == "ultrafeedback":
            items = _ultrafeedback_items(options)
        elif kind == "aloe":
            items, extra = _aloe_items(options)
        else:
            raise AloeError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        if not items:
            raise AloeError(f"{options.source}: no pairs on which a user has a preference")
        # ALOE users are split whole (new people at test time); prompts are split whole, so none leaks.
        split_of = split_groups([item["group"] for item in items], options.seed)
        splits = _pairs_from_choices(items, split_of, options.embedder)
        embedder = options.embedder
        if not all(splits.values()):
            raise AloeError(f"too little data: split sizes {[len(splits[s]) for s in SPLITS]}; add prompts or users")
    every = [record for name in SPLITS for record in splits[name]]
    meta = {
        "kind": kind,
        "dim": len(every[0].option_a),
        "users": sorted({r.user for r in every}),
        "embedder": embedder,
        "features": "per-dimension standardized by the train split's mean and std" if embedder else "raw",
        "option_prompt": prompt_hash(OPTION_PROMPT) if embedder else None,
        "agreement_rate": agreement_rate(Split.from_records(every)),
        **extra,
        "provenance": provenance({"kind": kind, **asdict(options)}, prompts=[OPTION_PROMPT] if embedder else []),
    }
    counts = write_dataset(output, splits, meta)
    return counts, meta
