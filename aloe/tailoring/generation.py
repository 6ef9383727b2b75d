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
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aloe.errors import RecordError
from aloe.responses import ResponseRequest, condition_messages
from aloe.tailoring.pairs import PreferencePair

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
                       placement: str, default_domain: str, sources: Sequence[str | None] | None = None) -> list[ResponseRequest]:
    """One request per pair: the prompt under its persona, placed for how the model was trained."""
    requests = []
    for position, (pair, persona) in enumerate(zip(pairs, personas)):
        shown = first_person(persona) if persona and placement == "after-prompt" else persona
        extra = {"persona_type": persona_type, "placement": placement, "domain": pair.domain or default_domain}
        if sources is not None and sources[position]:
            extra["persona_source"] = sources[position]
        requests.append(ResponseRequest(
            id=pair.id, prompt=pair.prompt, condition=persona,
            messages=condition_messages(pair.prompt, shown, placement),
            prefix=response_prefix(pair, default_domain), extra=extra))
    return requests


def persona_requests(path, pairs: Sequence[PreferencePair], persona_type: str, placement: str, default_domain: str,
                     train_path=None, system_persona: str | None = None, embedder_spec: str = "embedded") -> list[ResponseRequest]:
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
    return tailoring_requests(pairs, personas, persona_type, placement, default_domain, sources)
