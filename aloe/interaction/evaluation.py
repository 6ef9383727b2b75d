"""The ALOE evaluation: does a model align better to a user as the conversation goes on?

Each (profile, personality) pair of the evaluation set holds one conversation. At every turn, for all
active conversations at once (one `generate` call per role):

1. the user simulator (the same role prompt as data generation) writes the user's next message;
2. the model under test replies with its own chat template, seeing only the conversation:
   no persona, no system prompt;
3. the judge, shown the true profile and personality, the user's message and the reply, scores
   the reply 1-5; unparsed verdicts get one stricter reminder as one smaller batch.

Conversations are advanced in groups (`group_size`); a group's records are appended when it
finishes, and the response cache makes an interrupted group cheap to replay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from aloe.errors import AloeError
from aloe.interaction.personas import PersonaPair, load_pool, ordered_pairs
from aloe.interaction.simulation import USER_SIMULATOR_PROMPTS, user_turns
from aloe.judges import JudgedScore, Verdict
from aloe.judges import score as score_judge
from aloe.jsonl import read_records
from aloe.lockstep import ItemState, Roles, generate_some, history, run_lockstep
from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.prompts import prompt_hash, render
from aloe.records import Persona, Record

ROLES = ("model", "user", "judge")
# With --persona-system-message the model under test is told who the user is: the upper bound that
# says how much of the gap an explicit statement of the user's preferences closes.
PERSONA_SYSTEM_PROMPT = "persona_system_message"
PROMPTS = (*USER_SIMULATOR_PROMPTS, *score_judge.PROMPTS)


# ---------------------------------------------------------------- records


TurnScore = JudgedScore  # the judge's score of one reply


class EvalTurn(Record):
    turn: int = Field(ge=1)
    user: str
    reply: str
    finish_reason: str = "stop"  # of the reply: "length" when cut at the model's cap
    reply_tokens: int = 0
    user_finish_reason: str | None = None  # of the simulator's message (null in records written before it was kept)
    user_tokens: int = 0
    judge: TurnScore


class EvalRecord(Record):
    """One benchmark conversation: the persona pair, every turn with its score, and the run it belongs to."""

    id: str
    profile_id: str
    personality_id: str
    profile: str
    personality: str
    turns: list[EvalTurn] = Field(default_factory=list)
    stopped: str | None = None  # why the conversation ended before the last turn
    settings_hash: str

    def scores(self) -> list[int | None]:
        return [turn.judge.score for turn in self.turns]


def read_eval_records(path: str | Path) -> list[EvalRecord]:
    return read_records(path, EvalRecord, allow_empty=True, unique_ids=True)


# ---------------------------------------------------------------- persona pairs


def personas_hash(profiles: Sequence[Persona], personalities: Sequence[Persona]) -> str:
    payload = json.dumps([[(p.id, p.text) for p in profiles], [(p.id, p.text) for p in personalities]])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# The paper's benchmark paired each of its 20 evaluation profiles with the first 5 of its 7 evaluation
# personalities (100 pairs); its files hold the other 2 personalities unused.
PERSONALITIES_USED = 5


@dataclass(frozen=True)
class PersonaSet:
    """The profiles and personalities a benchmark run pairs, with the name and hash its result records."""

    profiles: list[Persona]
    personalities: list[Persona]  # the ones used: the first `PERSONALITIES_USED` of the file by default
    name: str
    personalities_in_file: int

    @property
    def hash(self) -> str:
        return personas_hash(self.profiles, self.personalities)

    def pairs(self) -> list[PersonaPair]:
        return ordered_pairs(self.profiles, self.personalities)

    def describe(self) -> dict:
        return {"name": self.name, "hash": self.hash, "profiles": len(self.profiles),
                "personalities": len(self.personalities), "personalities_in_file": self.personalities_in_file,
                "pairs": len(self.profiles) * len(self.personalities)}


def load_persona_set(profiles: str | Path, personalities: str | Path,
                     personalities_used: int | None = PERSONALITIES_USED) -> PersonaSet:
    """Every profile of `profiles` with the first `personalities_used` personalities (None: all of them),
    as the paper read its evaluation files: 20 profiles x the first 5 of 7 personalities = 100 pairs."""
    profile_pool, personality_pool = load_pool(profiles), load_pool(personalities)
    used = personality_pool[:personalities_used] if personalities_used else personality_pool
    name = f"{Path(profiles).name} x {Path(personalities).name}"
    if len(used) < len(personality_pool):
        name += f" (first {len(used)} of {len(personality_pool)} personalities)"
    return PersonaSet(profile_pool, used, name, len(personality_pool))


def prompt_hashes() -> dict[str, str]:
    return {name: prompt_hash(name) for name in PROMPTS}


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation stage's defaults; eval_aloe.py takes its flag defaults from here.

    The user simulator and the judge are fixed parts of the evaluation, not the model under test, so
    they do not follow --model; the paper used GPT-4o-mini for both (see docs/evaluation.md).
    """

    helper_model: str = "embedded"  # default spec of the user simulator and the judge
    turns: int = 10  # paper: 10
    max_new_tokens: int = 300  # the model under test; the paper capped every reply at 300 tokens
    user_temperature: float = 0.7
    user_max_new_tokens: int = 300  # the paper's simulator had the same 300-token cap
    judge_temperature: float = 0.0  # greedy
    judge_max_new_tokens: int = 64  # the verdict comes first (the paper's judge answered with the score alone)
    max_attempts: int = 3  # user simulator samples before an empty message ends a conversation
    group_size: int = 100
    bootstrap: int = 1000

    def role_params(self, model: SamplingParams) -> Roles[SamplingParams]:
        """Each role's sampling: the model under test's `model`, the simulator's and judge's from these settings."""
        return Roles(model=model,
                     user=model.replace(temperature=self.user_temperature, max_new_tokens=self.user_max_new_tokens),
                     judge=model.replace(temperature=self.judge_temperature, max_new_tokens=self.judge_max_new_tokens))


State = ItemState[PersonaPair]  # its turns: the EvalTurns so far; `stopped` says why it ended early


def eval_history(state: State) -> list[Message]:
    return history((turn.user, turn.reply) for turn in state.turns)


class AloeEvaluation:
    """Runs evaluation conversations in lockstep: each role's calls for turn k are one batch.

    `models` and `params` hold the roles model (under test), user and judge (`aloe.lockstep.Roles`).
    """

    def __init__(self, models: Roles[ChatModel], params: Roles[SamplingParams], turns: int, run_hash: str,
                 max_attempts: int = EvaluationSettings.max_attempts, persona_system_message: bool = False):
        if turns < 1:
            raise AloeError(f"--turns must be at least 1, got {turns}")
        self.models = models.require(ROLES)
        self.params = params.require(ROLES)
        self.turns = turns
        self.run_hash = run_hash
        self.max_attempts = max_attempts
        self.persona_system_message = persona_system_message

    def run(self, pairs: Sequence[PersonaPair], on_finish: Callable[[EvalRecord], None],
            on_failure: Callable[[PersonaPair, int, str], None] | None = None,
            group_size: int = EvaluationSettings.group_size) -> None:
        """Evaluate every pair; each group's records go to `on_finish` once the group has finished.

        A conversation whose user or model request failed after the backend's retries goes to
        `on_failure(pair, 0-based turn, reason)` instead (a re-run evaluates it again; without
        `on_failure` it stops the run); a judge request that failed leaves that turn unscored, asked
        again by the next run."""
        def stop(pair: PersonaPair, k: int, reason: str) -> None:
            raise AloeError(f"conversation {pair.id}, turn {k + 1}: {reason}")

        run_lockstep(pairs, self.turns, lambda active, k: self._advance(active, k, on_failure or stop),
                     lambda state: on_finish(self._record(state)),
                     (lambda state, k, reason: on_failure(state.item, k, reason)) if on_failure else None,
                     group_size=group_size, desc="conversations", unit="turns")

    def _advance(self, active: list[State], k: int, on_failure: Callable[[PersonaPair, int, str], None]) -> None:
        def fail(state: State, reason: str) -> None:
            state.done = state.reported = True
            on_failure(state.item, k, reason)

        # 1. the simulated user speaks; an empty message is re-sampled, then ends that conversation
        messages = user_turns(self.models.user, self.params.user, self.max_attempts,
                              [(s.item.profile.text, s.item.personality.text, eval_history(s)) for s in active])
        speaking = []  # (state, the simulator's accepted Outcome)
        for state, message in zip(active, messages):
            if message.ok:
                speaking.append((state, message))
            elif message.failed:
                fail(state, f"user simulator: {message.reason}")
            else:
                state.done = True
                state.stopped = f"the user simulator gave an empty message at turn {k + 1} ({self.max_attempts} attempts)"

        # 2. the model under test sees the conversation only, exactly as a user would show it (with
        #    persona_system_message, also a system message stating the user's persona)
        chats = [[*self._system(state.item), *eval_history(state), {"role": "user", "content": message.value}]
                 for state, message in speaking]
        replies, failures = generate_some(self.models.model, chats, self.params.model)
        for position, why in failures.items():
            fail(speaking[position][0], f"model under test: {why}")
        kept = [position for position in range(len(chats)) if position not in failures]
        speaking, replies = [speaking[p] for p in kept], [replies[p] for p in kept]

        # 3. the judge scores every reply; the unparsed ones are asked once more with a reminder
        judged = self.judge([(state.item, message.value, reply.text)
                             for (state, message), reply in zip(speaking, replies)])
        for (state, message), reply, score in zip(speaking, replies, judged):
            state.turns.append(EvalTurn(turn=k + 1, user=message.value, reply=reply.text,
                                        finish_reason=reply.finish_reason, reply_tokens=reply.completion_tokens,
                                        user_finish_reason=message.reply.finish_reason,
                                        user_tokens=message.reply.completion_tokens, judge=score))

    def _system(self, pair: PersonaPair) -> list[Message]:
        if not self.persona_system_message:
            return []
        content = render(PERSONA_SYSTEM_PROMPT, profile=pair.profile.text, personality=pair.personality.text)
        return [{"role": "system", "content": content}]

    def judge(self, items: Sequence[tuple[PersonaPair, str, str]],
              samples: Sequence[int] | None = None) -> list[TurnScore]:
        """Scores for (pair, user message, reply) items: one batch, then one reminder batch for the unparsed.

        `samples` holds each item's sample index (0 by default): a re-ask of a turn an earlier run left
        unscored is a fresh sample rather than a replay from the response cache. Each score keeps this
        ask's attempts only, so asking again replaces a turn's judgement instead of growing it. A
        request that failed after its retries leaves the score None with the reason.
        """
        prompts = [score_judge.judge_messages(pair.profile.text, pair.personality.text, message, reply)
                   for pair, message, reply in items]
        samples = list(samples) if samples is not None else [0] * len(items)
        attempts: list[list[Verdict[int]]] = [[] for _ in items]
        replies, failed = generate_some(self.models.judge, prompts, self.params.judge, samples)
        for position, reply in enumerate(replies):
            if reply is not None:
                attempts[position].append(score_judge.parse_score(reply.text))
        retry = [i for i, asked in enumerate(attempts) if asked and not asked[-1].parsed]
        reminders = [score_judge.reminder_messages(prompts[i], attempts[i][-1]) for i in retry]
        replies, failures = generate_some(self.models.judge, reminders, self.params.judge, [samples[i] for i in retry])
        for slot, (position, reply) in enumerate(zip(retry, replies)):
            if reply is None:
                failed[position] = failures[slot]
            else:
                attempts[position].append(score_judge.parse_score(reply.text))
        scores = []
        for position, verdicts in enumerate(attempts):
            score = score_judge.ScoreJudgement(verdicts).as_dict()
            for attempt in score["attempts"]:
                attempt["sample"] = samples[position]
            if position in failed and score["score"] is None:
                score["reason"] = failed[position]
            scores.append(TurnScore(**score))
        return scores

    def rejudge(self, records: Sequence[EvalRecord]) -> list[EvalRecord]:
        """Ask the judge again about every stored turn without a score; returns the records that changed.

        Stored raw outputs are first re-read with the current parser (free); only turns that still hold
        no score cost new calls, all of them in one batch, each as the sample after the last one asked.
        """
        changed: dict[str, EvalRecord] = {}
        todo: list[tuple[EvalRecord, EvalTurn]] = []
        for record in records:
            for turn in record.turns:
                if turn.judge.score is not None:
                    continue
                verdicts = [score_judge.parse_score(attempt.raw) for attempt in turn.judge.attempts]
                first_parsed = next((i for i, verdict in enumerate(verdicts) if verdict.parsed), None)
                if first_parsed is not None:
                    turn.judge = TurnScore(**score_judge.ScoreJudgement(verdicts[:first_parsed + 1]).as_dict())
                    changed[record.id] = record
                else:
                    todo.append((record, turn))
        if todo:
            pairs = {record.id: _pair_of(record) for record, _ in todo}
            scores = self.judge([(pairs[record.id], turn.user, turn.reply) for record, turn in todo],
                                [next_sample(turn.judge) for _, turn in todo])
            for (record, turn), score in zip(todo, scores):
                if score.attempts:  # else the request failed: the turn keeps what it had, for the next run
                    turn.judge = score
                    changed[record.id] = record
        return list(changed.values())

    def _record(self, state: State) -> EvalRecord:
        pair = state.item
        return EvalRecord(id=pair.id, profile_id=pair.profile.id, personality_id=pair.personality.id,
                          profile=pair.profile.text, personality=pair.personality.text,
                          turns=state.turns, stopped=state.stopped, settings_hash=self.run_hash)


def next_sample(judged: TurnScore) -> int:
    """The sample index of the next ask of an unscored turn: past every sample asked before. Records
    written before attempts carried their sample kept every ask, at samples below their count."""
    if not judged.attempts:
        return 0  # nothing was answered (the request failed): ask the same sample again
    asked = [getattr(attempt, "sample", 0) or 0 for attempt in judged.attempts]
    return max(max(asked) + 1, len(judged.attempts))


def _pair_of(record: EvalRecord) -> PersonaPair:
    profile = Persona(id=record.profile_id, text=record.profile)
    personality = Persona(id=record.personality_id, text=record.personality)
    return PersonaPair(record.id, profile, personality)
