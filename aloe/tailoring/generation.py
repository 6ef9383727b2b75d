"""Requests for persona-tailored responses: which persona each test prompt gets, and where it goes.

Persona types (the paper's inference settings):

| type | persona |
|---|---|
| gold-chosen / gold-rejected | inferred on the test pair itself |
| retr-chosen / retr-rejected | of the most similar training prompt (`retrieval`), or the file's `*_persona_retr` column |
| system | one fixed persona per domain: the medoid of the training chosen personas, or `--system-persona` |
| none | no persona: the plain baseline |

A model trained with personas sees the persona as a system message (the raw-text template of a base
model renders the system message as its `Persona:` line); a model trained without them gets it as
first-person text after the prompt ("The user is ..." becomes "I am ..."), as in the paper. Mnemonic
items must start with "<Term> sounds like": the prefix is re-attached where a response lacks it.

Few-shot mode, for untrained base models (`FewShot`): each test item is written in the paper's raw
layout ("Prompt: ...", "Persona: ..." under a system placement, "Response:") after `shots` exemplars
in the same layout, each a training pair's prompt, chosen persona and chosen response. The exemplars
come from the item's domain in one seeded order, so every item sees the same ones, except that the
item itself and pairs with its prompt (up to case and spacing) are skipped. A mnemonic item's query
ends in "Response: <Term> sounds like", which the model continues (stopped at the next "Prompt:").
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from aloe.errors import RecordError
from aloe.prompts import render
from aloe.responses import AFTER_PROMPT, ResponseRequest, condition_messages
from aloe.tailoring.inference import GENERAL
from aloe.tailoring.pairs import PreferencePair
from aloe.tailoring.retrieval import normalized_prompt

PERSONA_TYPES = ("gold-chosen", "gold-rejected", "retr-chosen", "retr-rejected", "system", "none")
MNEMONIC_DOMAIN = "mnemonics"
_QUOTED = re.compile(r"[\"“']([A-Za-z][A-Za-z -]*)[\"”']")


def first_person(persona: str) -> str:
    """"The user is curious and prefers ..." -> "I am curious and prefer ..." (the paper's test-time rewrite)."""
    text = re.sub(r"^\s*The user is\b", "I am", persona, flags=re.IGNORECASE)
    text = re.sub(r"^\s*The user's\b", "My", text, flags=re.IGNORECASE)
    text = re.sub(r"^\s*The user\b", "I", text, flags=re.IGNORECASE)
    return re.sub(r"\band prefers\b", "and prefer", text)


def mnemonic_term(pair: PreferencePair) -> str:
    """The vocabulary word of a mnemonic item: a `term` field, else the quoted word, else the prompt's last word."""
    term = getattr(pair, "term", None)
    if isinstance(term, str) and term.strip():
        return term.strip()
    quoted = _QUOTED.findall(pair.prompt)
    if quoted:
        return quoted[-1].strip()
    return re.sub(r"[^\w-]", "", pair.prompt.split()[-1])


def response_prefix(pair: PreferencePair, default_domain: str) -> str:
    if (pair.domain or default_domain) != MNEMONIC_DOMAIN:
        return ""
    term = mnemonic_term(pair)
    return f"{term[:1].upper()}{term[1:]} sounds like"


FEW_SHOT_PROMPTS = ("fewshot_response", "fewshot_persona_response")  # the raw layout without and with a persona
FEW_SHOT_STOP = ("Prompt:",)  # where a base model continuing the few-shot text would start the next item


@dataclass(frozen=True)
class FewShot:
    """Few-shot mode: `shots` exemplars from `pool` (read from `path`) before each item, in the order `seed` fixes."""

    pool: Sequence[PreferencePair]
    path: str
    shots: int = 5
    seed: int = 0

    def ordered(self) -> list[PreferencePair]:
        order = list(self.pool)
        random.Random(self.seed).shuffle(order)
        return order


def raw_item(prompt: str, persona: str | None, placement: str, response: str) -> str:
    """One item in the paper's raw layout, the persona placed as the model expects it (none: no persona)."""
    if persona and placement == "after-prompt":
        prompt, persona = render(AFTER_PROMPT, prompt=prompt, condition=first_person(persona)), None
    if persona and placement == "system":
        return render("fewshot_persona_response", prompt=prompt, persona=persona, response=response)
    return render("fewshot_response", prompt=prompt, response=response)


def few_shot_exemplars(path, number: int, pair: PreferencePair, ordered: Sequence[PreferencePair], few_shot: FewShot,
                       default_domain: str, with_persona: bool) -> list[PreferencePair]:
    """The first `shots` pairs of the item's domain in the seeded order, never the item or its prompt again."""
    domain = pair.domain or default_domain
    candidates = [other for other in ordered if (other.domain or default_domain) == domain]
    if not candidates and domain == GENERAL:
        candidates = list(ordered)
    seen = {normalized_prompt(pair.prompt)}
    picked = []
    for other in candidates:
        key = normalized_prompt(other.prompt)
        if other.id == pair.id or key in seen or (with_persona and not other.chosen_persona):
            continue
        seen.add(key)
        picked.append(other)
        if len(picked) == few_shot.shots:
            return picked
    needed = " with a chosen persona" if with_persona else ""
    raise RecordError(f"{path}: record {number}: domain: {few_shot.path} has {len(picked)} pairs of domain {domain!r}{needed} "
                      f"(other than this item) for {few_shot.shots} few-shot exemplars: lower --few-shot or "
                      "pass a larger --few-shot-pairs file")


def few_shot_text(pair: PreferencePair, exemplars: Sequence[PreferencePair], persona: str | None, placement: str,
                  prefix: str) -> str:
    """The exemplars with their chosen personas and responses, then the item, its response left to the model."""
    shown = persona is not None and placement != "none"
    blocks = [raw_item(other.prompt, other.chosen_persona if shown else None, placement, other.chosen)
              for other in exemplars]
    return "\n\n".join([*blocks, raw_item(pair.prompt, persona if shown else None, placement, prefix)])


def gold_personas(path, pairs: Sequence[PreferencePair], side: str) -> list[str]:
    personas = []
    for number, pair in enumerate(pairs, start=1):
        persona = pair.persona(side)
        if not persona:
            why = getattr(pair, f"{side}_persona_reason") or "the file has no personas: run data_generation/infer_personas.py on it first"
            raise RecordError(f"{path}: record {number}: {side}_persona: missing ({why})")
        personas.append(persona)
    return personas


def tailoring_requests(pairs: Sequence[PreferencePair], personas: Sequence[str | None], persona_type: str,
                       placement: str, default_domain: str, sources: Sequence[str | None] | None = None,
                       few_shot: FewShot | None = None, path="") -> list[ResponseRequest]:
    """One request per pair: the prompt under its persona, placed for how the model was trained
    (or, with `few_shot`, after exemplars in the raw layout)."""
    requests = []
    ordered = few_shot.ordered() if few_shot else []
    for position, (pair, persona) in enumerate(zip(pairs, personas)):
        extra = {"persona_type": persona_type, "placement": placement, "domain": pair.domain or default_domain}
        if sources is not None and sources[position]:
            extra["persona_source"] = sources[position]
        prefix = response_prefix(pair, default_domain)
        if few_shot:
            exemplars = few_shot_exemplars(path, position + 1, pair, ordered, few_shot, default_domain,
                                           with_persona=persona is not None and placement != "none")
            extra["few_shot_ids"] = [other.id for other in exemplars]
            messages = ({"role": "user", "content": few_shot_text(pair, exemplars, persona, placement, prefix)},)
        else:
            shown = first_person(persona) if persona and placement == "after-prompt" else persona
            messages = condition_messages(pair.prompt, shown, placement)
        requests.append(ResponseRequest(id=pair.id, prompt=pair.prompt, condition=persona, messages=messages,
                                        prefix=prefix, prefix_in_prompt=few_shot is not None, extra=extra))
    return requests


def persona_requests(path, pairs: Sequence[PreferencePair], persona_type: str, placement: str, default_domain: str,
                     train_path=None, system_persona: str | None = None, embedder_spec: str = "embedded",
                     few_shot: FewShot | None = None) -> list[ResponseRequest]:
    """The requests of a `persona_type` run over test `pairs`, retrieving from `train_path` where needed."""
    from aloe.tailoring.pairs import read_pairs

    if persona_type not in PERSONA_TYPES:
        raise ValueError(f"persona type must be one of {PERSONA_TYPES}, got {persona_type!r}")
    sources: list[str | None] = [None] * len(pairs)
    kind, _, side = persona_type.partition("-")
    if kind == "none":
        personas: list[str | None] = [None] * len(pairs)
    elif kind == "gold":
        personas = gold_personas(path, pairs, side)
    elif kind == "retr" and train_path is None:
        personas = [getattr(pair, f"{side}_persona_retr") for pair in pairs]
        missing = next((n for n, persona in enumerate(personas, start=1) if not persona), None)
        if missing is not None:
            raise RecordError(f"{path}: record {missing}: {side}_persona_retr: missing; pass --train-pairs "
                              "(training pairs with personas) to retrieve personas")
    elif kind == "system" and system_persona:
        personas = [system_persona] * len(pairs)
    else:
        if train_path is None:
            raise RecordError(f"{path}: --persona {persona_type} needs --train-pairs (training pairs with personas)"
                              + (" or --system-persona" if kind == "system" else ""))
        from aloe.sentence_embeddings import load_embedder
        from aloe.tailoring.retrieval import medoid_personas, retrieve

        pool = read_pairs(train_path)
        embedder = load_embedder(embedder_spec)
        if kind == "retr":
            found = retrieve(pairs, pool, side, embedder)
            personas, sources = [r.persona for r in found], [r.source_id for r in found]
        else:
            medoids = medoid_personas(pool, embedder, default_domain)
            personas = []
            for number, pair in enumerate(pairs, start=1):
                domain = pair.domain or default_domain
                if domain not in medoids:
                    raise RecordError(f"{path}: record {number}: domain: no training pair of domain {domain!r} "
                                      f"with a persona in {train_path}")
                personas.append(medoids[domain])
    return tailoring_requests(pairs, personas, persona_type, placement, default_domain, sources, few_shot, path)
