"""Tree-structured multi-turn preference data, generated in lockstep.

Each conversation pairs one profile with one personality. At every turn, for all active
conversations at once (one `generate` call per role):

1. the user simulator writes the user's next message;
2. the persona extractor states what the user has revealed so far;
3. the assistant writes two replies in one batch of 2N: one hinted with the inferred persona, one plain;
4. the preference judge compares them in both orders (one batch of 2N);
5. the conversation continues along one reply (`--continue`); the other stays as the sibling leaf.

A turn is built in local variables and committed to a conversation only when every step of it
succeeded, so a failed call never leaves half a turn behind, and the chat every model sees is
rebuilt from committed turns with explicit roles (never from list positions).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aloe.messages import format_transcript
from aloe.errors import AloeError
from aloe.judges import Verdict
from aloe.judges.preference import (
    ON_TIE_RULES, PreferenceItem, PreferenceJudge, combine, judge_messages, judged_order,
)
from aloe.models.base import ChatModel, SamplingParams
from aloe.messages import Message
from aloe.prompts import prompt_hash, render
from aloe.records import Conversation, PairedReplies, Persona, Turn
from aloe.interaction.simulation import USER_SIMULATOR_PROMPTS, clean_user_message, user_simulator_messages

ROLES = ("user", "extractor", "assistant", "judge")
CONTINUE_RULES = ("random", "preferred", "rejected")
PROMPTS = (*USER_SIMULATOR_PROMPTS, "persona_extractor", "assistant_hinted", "assistant_plain", PreferenceJudge.prompt)

T = TypeVar("T")


# ---------------------------------------------------------------- pairing


@dataclass(frozen=True)
class PersonaPair:
    """One conversation to generate: a profile, a personality and the id derived from both."""

    id: str
    profile: Persona
    personality: Persona


def pair_id(profile: Persona, personality: Persona) -> str:
    # From the two persona ids, not from a position, so ids survive sharding, resuming and a larger N.
    return "conv-" + hashlib.sha1(f"{profile.id}\n{personality.id}".encode()).hexdigest()[:12]


def pair_personas(profiles: Sequence[Persona], personalities: Sequence[Persona], count: int, seed: int) -> list[PersonaPair]:
    """`count` distinct (profile, personality) pairs drawn with a seeded RNG.

    Draws are sequential, so the first N pairs of a seed are the same whatever `count` is.
    """
    total = len(profiles) * len(personalities)
    if count > total:
        raise AloeError(f"--num-conversations {count} is more than the {len(profiles)} profiles x "
                        f"{len(personalities)} personalities = {total} distinct pairs; lower it or add personas")
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    pairs = []
    while len(pairs) < count:
        key = (rng.randrange(len(profiles)), rng.randrange(len(personalities)))
        if key in seen:
            continue
        seen.add(key)
        profile, personality = profiles[key[0]], personalities[key[1]]
        pairs.append(PersonaPair(pair_id(profile, personality), profile, personality))
    return pairs


# ---------------------------------------------------------------- persona extractor


@dataclass(frozen=True)
class Extraction:
    profile: str | None
    personality: str | None
    reason: str | None = None  # why nothing could be parsed

    @property
    def parsed(self) -> bool:
        return self.reason is None


_EXTRACTOR_LABEL = re.compile(
    r"^[\s>*#_\-\d.]*(?:inferred\s+|revealed\s+|user'?s?\s+)?(profile|personalit(?:y|ies)|traits?)"
    r"\s*(?:facts|traits)?\s*[*_]*\s*[:：]\s*[*_]*\s*(.*)$",
    re.IGNORECASE,
)
# "Profile: ... / Personalities: ..." on one line: split before the second label.
_INLINE_SECOND_LABEL = re.compile(r"\s*[/|;]?\s*(?=\b(?:personalit(?:y|ies)|traits?)\s*[:：])", re.IGNORECASE)
_NONE_VALUE = re.compile(r"^(?:none|nothing|n/?a|unknown|not (?:yet )?(?:evident|revealed|mentioned))\b", re.IGNORECASE)


def is_none_value(text: str | None) -> bool:
    """An extractor value that says nothing was revealed: None, "None", "none yet.", "N/A", ""."""
    if text is None:
        return True
    stripped = text.strip().strip("*_`'\".:-[]() ").strip()
    return not stripped or (_NONE_VALUE.match(stripped) is not None and len(stripped) < 60)


def parse_extraction(text: str) -> Extraction:
    """Read `Profile: ...` and `Personalities: ...` from the extractor's output, tolerating markdown,
    bullet lists under a label, both labels on one line and `None`-like values."""
    parts: dict[str, list[str]] = {"profile": [], "personality": []}
    current = None
    for line in _INLINE_SECOND_LABEL.sub("\n", text).splitlines():
        match = _EXTRACTOR_LABEL.match(line)
        if match:
            current = "profile" if match.group(1).lower() == "profile" else "personality"
            parts[current].append(match.group(2))
        elif current and line.strip():
            parts[current].append(line)
    if current is None:
        return Extraction(None, None, reason="no 'Profile:' or 'Personalities:' line in the extractor's output")

    def value(lines: list[str]) -> str | None:
        joined = " ".join(line.strip().lstrip("-*• ").strip() for line in lines if line.strip())
        joined = joined.strip().strip("*_ ").strip()
        return None if is_none_value(joined) else joined

    return Extraction(value(parts["profile"]), value(parts["personality"]))


# ---------------------------------------------------------------- per-conversation state


@dataclass
class ConversationState:
    """The committed turns of one conversation; nothing here changes until a whole turn succeeded."""

    pair: PersonaPair
    turns: list[Turn] = field(default_factory=list)
    finished: bool = False

    def history(self) -> list[Message]:
        """The chat along the continuing branch, with explicit roles."""
        messages: list[Message] = []
        for turn in self.turns:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.continued_reply})
        return messages


@dataclass(frozen=True)
class GenerationSettings:
    turns: int = 10
    continue_rule: str = "random"
    on_tie: str = "hinted"
    seed: int = 0
    max_attempts: int = 2  # per step: an empty message or an unparsed verdict is re-sampled this often

    def __post_init__(self):
        if self.turns < 1:
            raise AloeError(f"turns must be at least 1, got {self.turns}")
        if self.continue_rule not in CONTINUE_RULES:
            raise AloeError(f"--continue must be one of {', '.join(CONTINUE_RULES)}, got {self.continue_rule!r}")
        if self.on_tie not in ON_TIE_RULES:
            raise AloeError(f"--on-tie must be one of {', '.join(ON_TIE_RULES)}, got {self.on_tie!r}")


@dataclass
class RoleModels:
    user: ChatModel
    extractor: ChatModel
    assistant: ChatModel
    judge: ChatModel


Failure = Callable[[PersonaPair, int, str], None]  # (pair, 0-based turn, reason)


class ConversationGenerator:
    """Advances many conversations in lockstep: each role's calls for turn k are one batch."""

    def __init__(self, models: RoleModels, params: SamplingParams, settings: GenerationSettings,
                 meta: dict[str, Any] | None = None):
        self.models = models
        self.params = params
        self.settings = settings
        self.judge = PreferenceJudge()
        self.meta = {
            "models": {role: getattr(models, role).spec for role in ROLES},
            "prompts": {name: prompt_hash(name) for name in PROMPTS},
            "seed": settings.seed,
            "continue": settings.continue_rule,
            "on_tie": settings.on_tie,
            **(meta or {}),
        }

    def run(self, pairs: Sequence[PersonaPair], on_finish: Callable[[Conversation], None], on_failure: Failure) -> None:
        """Generate every pair's conversation. Finished ones go to `on_finish`, failed ones to `on_failure`.

        A model call that fails for good (ModelCallError after the backend's retries) fails every
        conversation still active and is re-raised: nothing after it could succeed either.
        """
        states = [ConversationState(pair) for pair in pairs]
        for turn_index in range(self.settings.turns):
            active = [state for state in states if not state.finished]
            if not active:
                break
            try:
                self._advance(active, turn_index, on_finish, on_failure)
            except AloeError as exc:
                for state in active:
                    if not state.finished:
                        state.finished = True
                        on_failure(state.pair, turn_index, str(exc))
                raise
        for state in states:
            if not state.finished:
                state.finished = True
                on_finish(self._record(state))

    # One turn for every active conversation; each step drops the conversations that failed it.
    def _advance(self, active: list[ConversationState], k: int, on_finish, on_failure: Failure) -> None:
        def fail(state: ConversationState, reason: str) -> None:
            state.finished = True
            on_failure(state.pair, k, reason)

        # 1. the user simulator
        prompts = [user_simulator_messages(s.pair.profile.text, s.pair.personality.text, s.history()) for s in active]
        user_messages = self._generate_checked(self.models.user, prompts, _user_message)
        alive = []
        for state, (message, reason) in zip(active, user_messages):
            if reason:
                fail(state, f"user simulator: {reason}")
            else:
                alive.append((state, message))

        # 2. the persona extractor (an unparsable answer means nothing inferred; it is kept, not retried)
        prompts = [[{"role": "user", "content": render(
            "persona_extractor", profile=s.pair.profile.text, personality=s.pair.personality.text,
            transcript=format_transcript([*s.history(), {"role": "user", "content": message}]),
        )}] for s, message in alive]
        extractor_raw = [reply.text for reply in self._generate(self.models.extractor, prompts)]
        extractions = [parse_extraction(text) for text in extractor_raw]

        # 3. hinted and plain replies, one batch of 2N
        hinted_prompts, plain_prompts = [], []
        for (state, message), extraction in zip(alive, extractions):
            chat = [*state.history(), {"role": "user", "content": message}]
            hint = render("assistant_hinted", inferred_profile=extraction.profile or "None",
                          inferred_personality=extraction.personality or "None")
            hinted_prompts.append([{"role": "system", "content": hint}, *chat])
            plain_prompts.append([{"role": "system", "content": render("assistant_plain")}, *chat])
        replies = self._generate_checked(self.models.assistant, hinted_prompts + plain_prompts, _assistant_reply)
        n = len(alive)
        survivors = []
        for position, (state, message) in enumerate(alive):
            (hinted, hinted_reason), (plain, plain_reason) = replies[position], replies[n + position]
            if hinted_reason or plain_reason:
                fail(state, f"assistant: {hinted_reason or plain_reason}")
            else:
                survivors.append((position, state, message, hinted, plain))

        # 4. the judge, both orders of every pair in one batch of 2N
        items = [PreferenceItem(state.pair.profile.text, state.pair.personality.text, tuple(state.history()),
                                message, hinted, plain) for _, state, message, hinted, plain in survivors]
        asks = self.judge.asks(items)
        verdicts = self._generate_checked(self.models.judge, [messages for _, _, messages in asks], _verdict,
                                          keep_unaccepted=True)
        orders: list[list] = [[] for _ in items]
        for (item_position, shown, _), (verdict, _) in zip(asks, verdicts):
            orders[item_position].append(judged_order(shown, verdict))

        # 5. commit each conversation's turn, now that all of it exists
        for (position, state, message, hinted, plain), judged in zip(survivors, orders):
            judgement = combine(judged, self.settings.on_tie, self._rng(state.pair.id, k, "tie"))
            if judgement is None:  # --on-tie skip: the conversation ends before this turn
                state.finished = True
                if state.turns:
                    on_finish(self._record(state, stopped=f"judge tie at turn {k + 1} (--on-tie skip)"))
                else:
                    on_failure(state.pair, k, f"skipped: judge tie at turn {k + 1} (--on-tie skip)")
                continue
            by_source = {"hinted": hinted, "plain": plain}
            loser = "plain" if judgement.winner == "hinted" else "hinted"
            extraction = extractions[position]
            state.turns.append(Turn(
                user=message,
                assistant=PairedReplies(preferred=by_source[judgement.winner], rejected=by_source[loser]),
                chosen=self._continue_branch(state.pair, k),
                inferred_profile=extraction.profile,
                inferred_personality=extraction.personality,
                judge=judgement,
                extractor_output=extractor_raw[position],
            ))

    def _continue_branch(self, pair: PersonaPair, k: int) -> str:
        if self.settings.continue_rule != "random":
            return self.settings.continue_rule
        return self._rng(pair.id, k, "continue").choice(["preferred", "rejected"])

    def _rng(self, pair_id: str, k: int, purpose: str) -> random.Random:
        # Seeded per conversation and turn, so draws do not depend on batching, sharding or resuming.
        return random.Random(f"{self.settings.seed}/{pair_id}/{k}/{purpose}")

    def rejudge(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        """Ask the judge again about every order a previous run left without a verdict; returns the changed.

        All re-asks are one batch, each as a new sample (index `max_attempts` plus earlier re-asks), so the
        response cache does not replay the failed answer. A turn whose label changes swaps `preferred` and
        `rejected` and flips `chosen` with them: `chosen` still names the reply the conversation continued
        with, so the generated tree never changes, only its labels.
        """
        asks = []  # (conversation, turn index, order index, messages, sample index)
        for conversation in conversations:
            for k, turn in enumerate(conversation.conversations):
                if not turn.verdict_missing:
                    continue
                item = _preference_item(conversation, k)
                for o, order in enumerate(turn.judge.orders):
                    if order.verdict is None:
                        messages = judge_messages(item, order.shown)
                        asks.append((conversation, k, o, messages, self.settings.max_attempts + turn.judge.rejudged))
        if not asks:
            return []
        replies = self.models.judge.generate([a[3] for a in asks], self.params, sample_indices=[a[4] for a in asks])
        changed: dict[str, Conversation] = {}
        for (conversation, k, o, _, _), reply in zip(asks, replies):
            judgement = conversation.conversations[k].judge
            judgement.orders[o] = judged_order(judgement.orders[o].shown, PreferenceJudge.parse(reply.text))
            changed[conversation.id] = conversation
        for conversation in changed.values():
            for k, turn in enumerate(conversation.conversations):
                if turn.verdict_missing:
                    tie_rng = self._rng(conversation.id, k, "tie")  # the draw the first run made
                    _relabel(turn, combine(turn.judge.orders, self.settings.on_tie, tie_rng))
        return list(changed.values())

    def _record(self, state: ConversationState, stopped: str | None = None) -> Conversation:
        meta = {**self.meta, "profile_id": state.pair.profile.id, "personality_id": state.pair.personality.id,
                "turns_requested": self.settings.turns}
        if stopped:
            meta["stopped"] = stopped
        return Conversation(id=state.pair.id, profile=state.pair.profile.text, personality=state.pair.personality.text,
                            conversations=list(state.turns), meta=meta)

    def _generate(self, model: ChatModel, prompts: list[list[Message]], attempt: int = 0):
        if not prompts:
            return []
        return model.generate(prompts, self.params, sample_indices=[attempt] * len(prompts))

    def _generate_checked(self, model: ChatModel, prompts: list[list[Message]],
                          check: Callable[[str], tuple[T, str | None]], keep_unaccepted: bool = False
                          ) -> list[tuple[T, str | None]]:
        """One batch call; outputs that `check` rejects are re-sampled (a new sample index) as one
        smaller batch, up to `max_attempts` in all. Returns (value, reason) with reason None when accepted;
        with `keep_unaccepted` the last value is kept and its reason cleared after the final attempt."""
        results: list[tuple[Any, str | None]] = [(None, "not generated")] * len(prompts)
        todo = list(range(len(prompts)))
        for attempt in range(self.settings.max_attempts):
            if not todo:
                break
            replies = self._generate(model, [prompts[i] for i in todo], attempt)
            for position, reply in zip(todo, replies):
                results[position] = check(reply.text)
            todo = [position for position in todo if results[position][1] is not None]
        if keep_unaccepted:
            results = [(value, None) for value, _ in results]
        return [(value, f"{reason} after {self.settings.max_attempts} attempts" if reason else None)
                for value, reason in results]


def _preference_item(conversation: Conversation, k: int) -> PreferenceItem:
    """What the judge saw at turn k of a stored conversation."""
    turn = conversation.conversations[k]
    hinted_branch = turn.judge.hinted
    plain_branch = "rejected" if hinted_branch == "preferred" else "preferred"
    history = conversation.history_before(k)[:-1]
    return PreferenceItem(conversation.profile, conversation.personality, tuple(history), turn.user,
                          getattr(turn.assistant, hinted_branch), getattr(turn.assistant, plain_branch))


def _relabel(turn: Turn, judgement) -> None:
    """Give a stored turn a new judgement, swapping the branches (and `chosen`) if the winner changed."""
    old = turn.judge
    if judgement is None:  # only when --on-tie changed to skip since; a written turn is never dropped
        old.rejudged += 1
        return
    judgement.rejudged = old.rejudged + 1
    if judgement.hinted != old.hinted:
        turn.assistant = PairedReplies(preferred=turn.assistant.rejected, rejected=turn.assistant.preferred)
        if turn.chosen is not None:
            turn.chosen = "rejected" if turn.chosen == "preferred" else "preferred"
    turn.judge = judgement


def _user_message(text: str) -> tuple[str, str | None]:
    message = clean_user_message(text)
    return message, None if message else "empty message"


def _assistant_reply(text: str) -> tuple[str, str | None]:
    reply = text.strip()
    return reply, None if reply else "empty reply"


def _verdict(text: str) -> tuple[Verdict[str], str | None]:
    verdict = PreferenceJudge.parse(text)
    return verdict, verdict.reason

