"""Persona inference: for each preference pair, the persona of a user who would choose each side.

Every pair is asked twice with the same few-shot prompt, the response to explain always in the
"Chosen Response" slot: (chosen, rejected) gives the chosen persona P_C, (rejected, chosen) the
rejected persona P_R. The model is never told which side the annotator preferred.

The prompt (`prompts/persona_inference.txt`) is a domain's instruction paragraph
(`persona_instruction_<domain>.txt`), five exemplars from the few-shot file (alternately explaining
their chosen and their rejected side, so the slot, not the label, carries the meaning), the
instruction again, and the query ending in "Persona:". Greedy, 200 tokens, stopped at the next
"Prompt:"; the first line is kept. All 2N asks of a run are one batch; an unusable answer (empty,
or too short to be a persona) is re-sampled at a temperature, a bounded number of times, and a
pair whose persona stays unusable keeps None with the reason (asked again by the next run).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aloe.errors import RecordError
from aloe.lockstep import generate_checked
from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.progress import Progress
from aloe.prompts import available, render
from aloe.tailoring.pairs import SIDES, PreferencePair, read_pairs

PROMPT = "persona_inference"
EXEMPLAR = "persona_exemplar"
GENERAL = "general"  # the domain of pairs that name none, unless --domain says otherwise
SHOTS = 5
MIN_WORDS = 3


def instruction_prompt(domain: str) -> str:
    return f"persona_instruction_{domain}"


def prompt_names(domains: Sequence[str]) -> list[str]:
    """Every prompt file a run over these domains uses (for provenance)."""
    return [PROMPT, EXEMPLAR, *sorted({instruction_prompt(domain) for domain in domains})]


@dataclass(frozen=True)
class InferenceSettings:
    """The paper's settings (greedy, 200 tokens, stop at "Prompt:"), plus bounded re-samples."""

    max_new_tokens: int = 200
    temperature: float = 0.0
    max_attempts: int = 3  # the greedy ask plus re-samples of unusable answers
    resample_temperature: float = 0.7
    seed: int = 0
    shots: int = SHOTS  # exemplars per prompt; fewer make toy runs faster (the prompt is mostly exemplars)

    def params(self) -> SamplingParams:
        # Only the first line is kept, so generation may stop at the first line break too.
        return SamplingParams(temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=self.seed,
                              stop=("Prompt:", "\n"))


def read_exemplars(path: str | Path) -> dict[str, list[PreferencePair]]:
    """The few-shot file's pairs by domain; each needs a domain and both gold personas."""
    exemplars: dict[str, list[PreferencePair]] = {}
    for number, pair in enumerate(read_pairs(path), start=1):
        for field in ("domain", "chosen_persona", "rejected_persona"):
            if not (getattr(pair, field) or "").strip():
                raise RecordError(f"{path}: record {number}: {field}: missing (a few-shot exemplar needs a domain "
                                  "and hand-written chosen and rejected personas)")
        exemplars.setdefault(pair.domain, []).append(pair)
    return exemplars


def exemplars_for(exemplars: dict[str, list[PreferencePair]], domain: str, shots: int = SHOTS) -> list[PreferencePair]:
    """A domain's first `shots` exemplars; the general prompt takes them round-robin across domains."""
    if domain in exemplars:
        return exemplars[domain][:shots]
    pools = [exemplars[name] for name in sorted(exemplars)]
    mixed = [pool[i] for i in range(max(map(len, pools), default=0)) for pool in pools if i < len(pool)]
    return mixed[:shots]


def domain_of(pair: PreferencePair, default: str) -> str:
    return pair.domain or default


def check_domains(path, pairs: Sequence[PreferencePair], exemplars: dict[str, list[PreferencePair]],
                  default: str, fewshot_path) -> None:
    """Every pair's domain has an instruction file, and exemplars (its own, or any for the general prompt)."""
    for number, pair in enumerate(pairs, start=1):
        domain = domain_of(pair, default)
        if instruction_prompt(domain) not in available():
            known = sorted(name.removeprefix("persona_instruction_") for name in available()
                           if name.startswith("persona_instruction_"))
            raise RecordError(f"{path}: record {number}: domain: {domain!r} has no persona inference prompt "
                              f"(known: {', '.join(known)}); pass --domain general or add "
                              f"aloe/tailoring/prompts/{instruction_prompt(domain)}.txt")
        if domain != GENERAL and domain not in exemplars:
            raise RecordError(f"{path}: record {number}: domain: {domain!r} has no few-shot exemplars in "
                              f"{fewshot_path}; add five with gold personas")
        if not exemplars_for(exemplars, domain):
            raise RecordError(f"{fewshot_path}: no few-shot exemplars")


def render_exemplar(position: int, pair: PreferencePair) -> str:
    explained = SIDES[position % 2]
    other = SIDES[1 - position % 2]
    return render(EXEMPLAR, prompt=pair.prompt, chosen=pair.response(explained), rejected=pair.response(other),
                  persona=pair.persona(explained))


def inference_messages(pair: PreferencePair, side: str, exemplars: Sequence[PreferencePair],
                       domain: str) -> list[Message]:
    """The one user message asking for the persona of a user who chose `side` of the pair."""
    other = SIDES[1 - SIDES.index(side)]
    examples = "\n\n".join(render_exemplar(position, exemplar) for position, exemplar in enumerate(exemplars))
    prompt = render(PROMPT, instruction=render(instruction_prompt(domain)), examples=examples,
                    prompt=pair.prompt, chosen=pair.response(side), rejected=pair.response(other))
    return [{"role": "user", "content": prompt}]


_LABEL = re.compile(r"^\s*(?:\**\s*persona\s*\**\s*:\s*\**\s*)+", re.IGNORECASE)


def parse_persona(text: str) -> tuple[str | None, str | None]:
    """The first non-empty line before any "Prompt:", without a "Persona:" label or quotes."""
    text = text.split("Prompt:")[0]
    line = next((line for line in text.splitlines() if line.strip() and not set(line.strip()) <= set("-*#")), "")
    line = _LABEL.sub("", line).strip().strip('"*').strip()
    if not line:
        return None, "no persona in the output"
    if len(line.split()) < MIN_WORDS:
        return None, f"persona {line!r} is too short"
    return line, None


def infer_personas(model: ChatModel, pairs: Sequence[PreferencePair], exemplars: dict[str, list[PreferencePair]],
                   default_domain: str = GENERAL, settings: InferenceSettings = InferenceSettings()) -> list[PreferencePair]:
    """Copies of `pairs` with chosen/rejected personas, their raw texts, and reasons where none was usable."""
    asks = [(pair, side) for pair in pairs for side in SIDES]
    prompts = [inference_messages(pair, side, exemplars_for(exemplars, domain_of(pair, default_domain), settings.shots),
                                  domain_of(pair, default_domain)) for pair, side in asks]
    params = settings.params()
    with Progress(len(prompts), "personas", "asks", enabled=bool(prompts)) as progress:
        outcomes = generate_checked(model, prompts, params, parse_persona, max_attempts=1, progress=progress)
    # A request that failed after its retries keeps its reason and is asked again, greedy, by the next run.
    retry = [position for position, outcome in enumerate(outcomes) if not outcome.ok and not outcome.failed]
    if retry and settings.max_attempts > 1:
        # Greedy decoding would repeat itself: re-samples draw at a temperature, each a new cache key.
        again = generate_checked(model, [prompts[p] for p in retry],
                                 params.replace(temperature=settings.resample_temperature), parse_persona,
                                 max_attempts=settings.max_attempts - 1, first_sample=1)
        for position, outcome in zip(retry, again):
            outcomes[position] = outcome
    updates: dict[str, dict] = {pair.id: {} for pair in pairs}
    for (pair, side), outcome in zip(asks, outcomes):
        updates[pair.id].update({f"{side}_persona": outcome.value if outcome.ok else None,
                                 f"{side}_persona_raw": outcome.raw,
                                 f"{side}_persona_reason": outcome.reason})
    return [pair.model_copy(update=updates[pair.id]) for pair in pairs]
