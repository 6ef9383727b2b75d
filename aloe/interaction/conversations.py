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

import datetime as dt
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aloe.errors import AloeError
from aloe.interaction.personas import PersonaPair
from aloe.interaction.simulation import USER_SIMULATOR_PROMPTS, user_turns
from aloe.judges import Verdict
from aloe.jsonl import existing_ids, read_records, rewrite_jsonl, write_json
from aloe.judges.preference import (
    JUDGE_PROMPTS, ON_TIE_RULES, PreferenceItem, PreferenceJudge, branch_of, combine, judge_messages, judged_order,
    paired_replies,
)
from aloe.lockstep import ItemState, Roles, generate_checked, generate_some, history, non_empty, run_lockstep
from aloe.messages import Message, format_transcript
from aloe.models.base import ChatModel, SamplingParams
from aloe.prompts import prompt_hash, render
from aloe.records import Conversation, PairedReplies, Turn
from aloe.runs import RunFiles

log = logging.getLogger("generate_conversations")

ROLES = ("user", "extractor", "assistant", "judge")
CONTINUE_RULES = ("random", "preferred", "rejected")
ROLE_PROMPTS = (*USER_SIMULATOR_PROMPTS, "persona_extractor", "assistant_hinted", "assistant_plain")  # + the judge's

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


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True)
class GenerationSettings:
    """The data-generation stage's settings; generate_conversations.py takes its flag defaults from here."""

    num_conversations: int = 10  # distinct (profile, personality) pairs (paper: 3000)
    turns: int = 10  # paper: 10
    continue_rule: str = "random"
    on_tie: str = "hinted"
    seed: int = 0
    max_attempts: int = 2  # per step: an empty message or an unparsed verdict is re-sampled this often
    judge_temperature: float = 0.0  # the preference judge runs greedy; the other roles use --temperature
    group_size: int = 64  # conversations advanced together; each group is written when it finishes
    judge_prompt: str = "transcript"  # a key of JUDGE_PROMPTS; "paper" is the ALOE paper's judge layout

    @property
    def prompts(self) -> tuple[str, ...]:
        """Every prompt file this run renders (their hashes go into each record and the provenance)."""
        return (*ROLE_PROMPTS, JUDGE_PROMPTS[self.judge_prompt])

    def __post_init__(self):
        if self.turns < 1:
            raise AloeError(f"turns must be at least 1, got {self.turns}")
        if self.continue_rule not in CONTINUE_RULES:
            raise AloeError(f"--continue must be one of {', '.join(CONTINUE_RULES)}, got {self.continue_rule!r}")
        if self.on_tie not in ON_TIE_RULES:
            raise AloeError(f"--on-tie must be one of {', '.join(ON_TIE_RULES)}, got {self.on_tie!r}")
        if self.judge_prompt not in JUDGE_PROMPTS:
            raise AloeError(f"--judge-prompt must be one of {', '.join(JUDGE_PROMPTS)}, got {self.judge_prompt!r}")


Failure = Callable[[PersonaPair, int, str], None]  # (pair, 0-based turn, reason)
State = ItemState[PersonaPair]  # its turns: the committed Turns; nothing changes until a whole turn succeeded


def conversation_history(state: State) -> list[Message]:
    """The chat along the continuing branch, with explicit roles."""
    return history((turn.user, turn.continued_reply) for turn in state.turns)


class ConversationGenerator:
    """Advances many conversations in lockstep: each role's calls for turn k are one batch.

    `models` holds the roles user, extractor, assistant and judge (`aloe.lockstep.Roles`); `params`
    samples every role but the judge, which uses it at `settings.judge_temperature`.
    """

    def __init__(self, models: Roles[ChatModel], params: SamplingParams, settings: GenerationSettings,
                 meta: dict[str, Any] | None = None):
        self.models = models.require(ROLES)
        self.params = params
        self.judge_params = params.replace(temperature=settings.judge_temperature)
        self.settings = settings
        self.judge = PreferenceJudge(JUDGE_PROMPTS[settings.judge_prompt])
        self.meta = {
            "models": {role: models[role].spec for role in ROLES},
            "prompts": {name: prompt_hash(name) for name in settings.prompts},
            "judge_prompt": settings.judge_prompt,
            "seed": settings.seed,
            "continue": settings.continue_rule,
            "on_tie": settings.on_tie,
            **(meta or {}),
        }

    def run(self, pairs: Sequence[PersonaPair], on_finish: Callable[[Conversation], None], on_failure: Failure,
            group_size: int | None = None, on_group: Callable[[int, int], None] | None = None) -> None:
        """Generate every pair's conversation. Finished ones go to `on_finish`, failed ones to `on_failure`.

        A request that failed after the backend's retries fails its own conversation (the others go on);
        a model call that fails for good (ModelCallError after the backend's retries) fails every
        conversation still active and is re-raised: nothing after it could succeed either.
        """
        run_lockstep(pairs, self.settings.turns, lambda active, k: self._advance(active, k, on_finish, on_failure),
                     finish=lambda state: on_finish(self._record(state)),
                     fail=lambda state, k, reason: on_failure(state.item, k, reason),
                     group_size=group_size, on_group=on_group, desc="conversations", unit="turns")

    # One turn for every active conversation; each step drops the conversations that failed it.
    def _advance(self, active: list[State], k: int, on_finish, on_failure: Failure) -> None:
        def fail(state: State, reason: str) -> None:
            state.done = state.reported = True
            on_failure(state.item, k, reason)

        # 1. the user simulator
        user_messages = user_turns(self.models.user, self.params, self.settings.max_attempts,
                                   [(s.item.profile.text, s.item.personality.text, conversation_history(s))
                                    for s in active])
        alive = []
        for state, outcome in zip(active, user_messages):
            if outcome.ok:
                alive.append((state, outcome.value))
            else:
                fail(state, f"user simulator: {outcome.reason}")

        # 2. the persona extractor (an unparsable answer means nothing inferred; it is kept, not retried)
        prompts = [[{"role": "user", "content": render(
            "persona_extractor", profile=s.item.profile.text, personality=s.item.personality.text,
            transcript=format_transcript([*conversation_history(s), {"role": "user", "content": message}]),
        )}] for s, message in alive]
        extracted, failures = generate_some(self.models.extractor, prompts, self.params)
        for position, why in failures.items():
            fail(alive[position][0], f"persona extractor: {why}")
        kept = [position for position in range(len(alive)) if position not in failures]
        alive, extractor_raw = [alive[p] for p in kept], [extracted[p].text for p in kept]
        extractions = [parse_extraction(text) for text in extractor_raw]

        # 3. hinted and plain replies, one batch of 2N
        hinted_prompts, plain_prompts = [], []
        for (state, message), extraction in zip(alive, extractions):
            chat = [*conversation_history(state), {"role": "user", "content": message}]
            hint = render("assistant_hinted", inferred_profile=extraction.profile or "None",
                          inferred_personality=extraction.personality or "None")
            hinted_prompts.append([{"role": "system", "content": hint}, *chat])
            plain_prompts.append([{"role": "system", "content": render("assistant_plain")}, *chat])
        replies = generate_checked(self.models.assistant, hinted_prompts + plain_prompts, self.params, non_empty,
                                   self.settings.max_attempts)
        n = len(alive)
        survivors = []
        for position, (state, message) in enumerate(alive):
            hinted, plain = replies[position], replies[n + position]
            if hinted.ok and plain.ok:
                survivors.append((position, state, message, hinted.value, plain.value))
            else:
                fail(state, f"assistant: {hinted.reason or plain.reason}")

        # 4. the judge, both orders of every pair in one batch of 2N
        items = [PreferenceItem(state.item.profile.text, state.item.personality.text,
                                tuple(conversation_history(state)), message, hinted, plain)
                 for _, state, message, hinted, plain in survivors]
        asks = self.judge.asks(items)
        verdicts = generate_checked(self.models.judge, [messages for _, _, messages in asks], self.judge_params,
                                    _verdict, self.settings.max_attempts, keep_unaccepted=True)
        orders: list[list] = [[] for _ in items]
        unjudged: dict[int, str] = {}  # item position -> why a request of it failed
        for (item_position, shown, _), verdict in zip(asks, verdicts):
            if verdict.failed:
                unjudged.setdefault(item_position, verdict.reason)
            else:
                orders[item_position].append(judged_order(shown, verdict.value))

        # 5. commit each conversation's turn, now that all of it exists
        for item_position, ((position, state, message, hinted, plain), judged) in enumerate(zip(survivors, orders)):
            pair = state.item
            if item_position in unjudged:
                fail(state, f"judge: {unjudged[item_position]}")
                continue
            judgement = combine(judged, self.settings.on_tie, self._rng(pair.id, k, "tie"))
            if judgement is None:  # --on-tie skip: the conversation ends before this turn
                stopped = f"judge tie at turn {k + 1} (--on-tie skip)"
                if state.turns:
                    state.done = state.reported = True
                    on_finish(self._record(state, stopped=stopped))
                else:
                    fail(state, f"skipped: {stopped}")
                continue
            extraction = extractions[position]
            state.turns.append(Turn(
                user=message,
                assistant=paired_replies(judgement.winner, hinted=hinted, plain=plain),
                chosen=self._continue_branch(pair, k),
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
                        messages = judge_messages(item, order.shown, self.judge.prompt)
                        asks.append((conversation, k, o, messages, self.settings.max_attempts + turn.judge.rejudged))
        if not asks:
            return []
        # A request that failed after its retries leaves its order unparsed, to be asked again by the next run.
        replies, _failures = generate_some(self.models.judge, [a[3] for a in asks], self.judge_params,
                                           [a[4] for a in asks])
        changed: dict[str, Conversation] = {}
        for (conversation, k, o, _, _), reply in zip(asks, replies):
            if reply is None:
                continue
            judgement = conversation.conversations[k].judge
            judgement.orders[o] = judged_order(judgement.orders[o].shown, PreferenceJudge.parse(reply.text))
            changed[conversation.id] = conversation
        for conversation in changed.values():
            for k, turn in enumerate(conversation.conversations):
                if turn.verdict_missing:
                    tie_rng = self._rng(conversation.id, k, "tie")  # the draw the first run made
                    _relabel(turn, combine(turn.judge.orders, self.settings.on_tie, tie_rng))
        return list(changed.values())

    def _record(self, state: State, stopped: str | None = None) -> Conversation:
        pair = state.item
        meta = {**self.meta, "profile_id": pair.profile.id, "personality_id": pair.personality.id,
                "turns_requested": self.settings.turns}
        if stopped:
            meta["stopped"] = stopped
        return Conversation(id=pair.id, profile=pair.profile.text, personality=pair.personality.text,
                            conversations=list(state.turns), meta=meta)


def _preference_item(conversation: Conversation, k: int) -> PreferenceItem:
    """What the judge saw at turn k of a stored conversation."""
    turn = conversation.conversations[k]
    history_before = conversation.history_before(k)[:-1]
    return PreferenceItem(conversation.profile, conversation.personality, tuple(history_before), turn.user,
                          getattr(turn.assistant, branch_of("hinted", turn.judge.winner)),
                          getattr(turn.assistant, branch_of("plain", turn.judge.winner)))


def _relabel(turn: Turn, judgement) -> None:
    """Give a stored turn a new judgement, swapping the branches (and `chosen`) if the winner changed."""
    old = turn.judge
    if judgement is None:  # only when --on-tie changed to skip since; a written turn is never dropped
        old.rejudged += 1
        return
    judgement.rejudged = old.rejudged + 1
    if judgement.winner != old.winner:
        turn.assistant = PairedReplies(preferred=turn.assistant.rejected, rejected=turn.assistant.preferred)
        if turn.chosen is not None:
            turn.chosen = "rejected" if turn.chosen == "preferred" else "preferred"
    turn.judge = judgement


def _verdict(text: str) -> tuple[Verdict[str], str | None]:
    verdict = PreferenceJudge.parse(text)
    return verdict, verdict.reason



# ---------------------------------------------------------------- the stage


@dataclass
class GenerationReport:
    """What one run of the stage did, for its one-line summary."""

    pairs: int
    already: int  # conversations already in the output
    written: int = 0
    failed: int = 0
    first_failure: str = ""
    rejudged: int = 0  # conversations rewritten after asking the judge again


def generate_conversations(run: RunFiles, pairs: Sequence[PersonaPair], settings: GenerationSettings,
                           load_generator: Callable[[], ConversationGenerator], judge_spec: str,
                           provenance_of: Callable[[ConversationGenerator], dict]) -> GenerationReport:
    """Generate `pairs` into `run`'s files, resuming what is there.

    Finished conversations are appended to the main file as they finish and failures to the failures
    file (rewritten each run: a re-run retries them); orders the judge left without a verdict in an
    earlier run of the same judge and --on-tie are asked again first. `load_generator` is called only
    when a model call is needed.
    """
    output = run.main
    # Read once: the finished ids are what resuming skips, the records what re-judging looks at.
    stored = read_records(output, Conversation, allow_empty=True, unique_ids=True) if output.exists() else []
    done = {conversation.id for conversation in stored}
    previously_failed = existing_ids(run.failures)
    pending = [pair for pair in pairs if pair.id not in done]
    log.info("%d conversations: %d already in %s, %d to generate (%d retried after failing before)",
             len(pairs), len(pairs) - len(pending), output, len(pending),
             sum(pair.id in previously_failed for pair in pending))
    report = GenerationReport(pairs=len(pairs), already=len(pairs) - len(pending))

    covered = {pair.id for pair in pairs}
    unparsed = [conversation for conversation in stored if conversation.id in covered
                and conversation.meta.get("models", {}).get("judge") == judge_spec
                and conversation.meta.get("on_tie") == settings.on_tie
                and conversation.meta.get("judge_prompt", "transcript") == settings.judge_prompt
                and any(turn.verdict_missing for turn in conversation.conversations)]
    if not (pending or unparsed):
        return report
    generator = load_generator()
    if unparsed:
        changed = generator.rejudge(unparsed)
        rewrite_jsonl(output, stored)
        still = sum(turn.verdict_missing for conversation in unparsed for turn in conversation.conversations)
        report.rejudged = len(changed)
        log.info("asked the judge again about %d conversations with unparsed verdicts: %d turns still unparsed "
                 "(%d conversations rewritten in %s)", len(unparsed), still, len(changed), output)
    finished = False
    try:
        if pending:
            write_json(run.provenance, provenance_of(generator))  # an interrupted run still says what ran
            _generate_pending(generator, pending, settings.group_size, run, report)
        finished = True
    finally:
        # Rewritten at the end, so it describes the run as it ended: what it wrote, failed and re-judged.
        write_json(run.provenance, {**provenance_of(generator), "run": {**asdict(report), "finished": finished}})
    return report


def _generate_pending(generator: ConversationGenerator, pending: Sequence[PersonaPair], group_size: int,
                      run: RunFiles, report: GenerationReport) -> None:
    with run.writers("conversations", lambda: report.written) as (writer, failures):

        def finish(conversation: Conversation) -> None:
            writer.write(conversation)
            report.written += 1

        def fail(pair: PersonaPair, turn_index: int, reason: str) -> None:
            failures.write({"id": pair.id, "profile_id": pair.profile.id, "personality_id": pair.personality.id,
                            "turn": turn_index + 1, "reason": reason,
                            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
            report.failed += 1
            report.first_failure = report.first_failure or reason

        def progress(start: int, end: int) -> None:
            log.info("group %d-%d done: %d written, %d failed so far", start + 1, end, report.written,
                     report.failed)

        generator.run(pending, finish, fail, group_size=group_size, on_group=progress)
