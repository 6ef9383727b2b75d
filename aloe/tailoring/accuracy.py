"""Checks of inferred personas: persona accuracy, persona preferences, and word saliency.

- **Persona accuracy**: a judge sees the prompt, both responses (in both orders) and one persona,
  and answers which response that user would pick (`prompts/persona_accuracy.txt`). Accuracy is the
  share of (persona, order) asks answered with the side the persona explains: the chosen response
  for P_C, the rejected one for P_R; random is 0.5. Unparsed answers are counted apart, and also
  reported the original way, as wrong.
- **Persona preferences**: which of P_C and P_R is the better persona (`persona_preference.txt`,
  with the prompt and both responses shown), both orders; inconsistent orders are a tie.
- **Word saliency**: S(label | word) = count(word, label) / count(word) over the lemmatized first
  sentences of the personas, cut at "rather than / over / versus / compared to / instead of";
  words in at least `min_count` personas; the top words per label.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from aloe.errors import RecordError
from aloe.judges.pairwise import PairwiseItem, PairwiseJudge, PairwiseJudgement
from aloe.metrics import accuracy_metrics, win_rate_metrics
from aloe.tailoring.pairs import SIDES, PreferencePair

ACCURACY_PROMPT = "persona_accuracy"
PREFERENCE_PROMPT = "persona_preference"
EXPECTED = {"chosen": "a", "rejected": "b"}  # the side of each item that a persona explains (a = chosen response)


def judged_pairs(path, pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The pairs that have personas; a pair that inference never ran on is an error naming it."""
    for number, pair in enumerate(pairs, start=1):
        for side in SIDES:
            if pair.persona(side) is None and getattr(pair, f"{side}_persona_reason") is None:
                raise RecordError(f"{path}: record {number}: {side}_persona: missing (run "
                                  "data_generation/infer_personas.py on this file first)")
    return [pair for pair in pairs if pair.chosen_persona or pair.rejected_persona]


def accuracy_judge() -> PairwiseJudge:
    return PairwiseJudge(prompt=ACCURACY_PROMPT)


def accuracy_items(pairs: Sequence[PreferencePair]) -> list[PairwiseItem]:
    """One item per pair and persona side: the chosen response is `a`, the rejected one `b`."""
    return [PairwiseItem(id=f"{pair.id}/{side}", a=pair.chosen, b=pair.rejected,
                         context={"prompt": pair.prompt, "persona": pair.persona(side)})
            for pair in pairs for side in SIDES if pair.persona(side)]


def order_correctness(judgement: PairwiseJudgement, side: str) -> list[bool | None]:
    """Per order asked: whether the judge picked the response the persona explains (None: unparsed).

    Identical responses were not asked: both orders count as unparsed, since no answer can be right.
    """
    if judgement.identical:
        return [None, None]
    return [None if order.pick is None else order.pick == EXPECTED[side] for order in judgement.orders]


def accuracy_report(pairs: Sequence[PreferencePair], judgements: Sequence[PairwiseJudgement], default_domain: str,
                    samples: int = 1000, seed: int = 0) -> dict:
    """Accuracy per domain and persona side (and over all domains), with bootstrap intervals."""
    domain = {pair.id: pair.domain or default_domain for pair in pairs}
    answers: dict[tuple[str, str], list[bool | None]] = {}
    for judgement in judgements:
        pair_id, side = judgement.id.rsplit("/", 1)
        for key in ((domain[pair_id], side), ("all", side)):
            answers.setdefault(key, []).extend(order_correctness(judgement, side))
    report: dict = {}
    for (name, side), correct in sorted(answers.items()):
        report.setdefault(name, {})[side] = accuracy_metrics(correct, samples, seed)
    return report


def preference_judge() -> PairwiseJudge:
    return PairwiseJudge(prompt=PREFERENCE_PROMPT, sides=("persona_a", "persona_b"))


def preference_items(pairs: Sequence[PreferencePair]) -> list[PairwiseItem]:
    """One item per pair with both personas: P_C is `a`, P_R is `b`."""
    return [PairwiseItem(id=pair.id, a=pair.chosen_persona, b=pair.rejected_persona,
                         context={"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected})
            for pair in pairs if pair.chosen_persona and pair.rejected_persona]


def preference_report(pairs: Sequence[PreferencePair], judgements: Sequence[PairwiseJudgement], default_domain: str,
                      samples: int = 1000, seed: int = 0) -> dict:
    """Per domain: how often P_C (a) or P_R (b) was the better persona; win_rate is P_R's share."""
    domain = {pair.id: pair.domain or default_domain for pair in pairs}
    outcomes: dict[str, list[str]] = {}
    for judgement in judgements:
        for name in (domain[judgement.id], "all"):
            outcomes.setdefault(name, []).append(judgement.outcome)
    return {name: win_rate_metrics(values, samples, seed) for name, values in sorted(outcomes.items())}


# ---------------------------------------------------------------- word saliency

CUES = ("rather than", "over", "versus", "compared to", "instead of")
_CUE = re.compile(r"\b(?:" + "|".join(re.escape(cue) for cue in CUES) + r")\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Words every persona shares by construction ("The user is ... and prefers ..."), and function words.
STOPWORDS = frozenset("""the a an and or of to in on for with who is are be that this their they them it its as at by
from user users prefer prefers response responses answer answers which what when how than more most very""".split())


def persona_clause(persona: str) -> str:
    """The first sentence, cut at the first contrast cue ("... rather than ...")."""
    first = _SENTENCE_END.split(persona.strip(), maxsplit=1)[0]
    return _CUE.split(first, maxsplit=1)[0]


def lemmas(text: str) -> set[str]:
    """The distinct lemmas of a text's words, lowercased, without stopwords (simplemma ships its English data)."""
    import simplemma

    words = (simplemma.lemmatize(word.lower(), lang="en") for word in _WORD.findall(text))
    return {word for word in words if word not in STOPWORDS and len(word) > 1}


def saliency(personas: Mapping[str, Sequence[str]], min_count: int = 10, top: int = 10) -> dict[str, list[dict]]:
    """Per label, the `top` words by S(label | word) = personas of the label with the word / personas with it,
    among words in at least `min_count` personas (ties broken by count, then alphabetically)."""
    by_label = {label: Counter(word for text in texts for word in lemmas(persona_clause(text)))
                for label, texts in personas.items()}
    total = Counter()
    for counts in by_label.values():
        total.update(counts)
    table = {}
    for label, counts in by_label.items():
        rows = [{"word": word, "saliency": counts[word] / total[word], "count": counts[word], "total": total[word]}
                for word in total if total[word] >= min_count and counts[word]]
        rows.sort(key=lambda row: (-row["saliency"], -row["count"], row["word"]))
        table[label] = rows[:top]
    return table
