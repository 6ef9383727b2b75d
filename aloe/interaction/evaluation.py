"""The ALOE benchmark: does a model align better to a user as the conversation goes on?

Each (profile, personality) pair of the benchmark holds one conversation. At every turn, for all
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
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from aloe.interaction.conversations import PersonaPair, pair_id
from aloe.errors import AloeError
from aloe.judges import JudgeAttempt, JudgedScore, Verdict
from aloe.judges import score as score_judge
from aloe.jsonl import read_records
from aloe.metrics import alignment_metrics
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.messages import Message
from aloe.prompts import prompt_hash
from aloe.records import Persona, Record
from aloe.interaction.simulation import USER_SIMULATOR_PROMPTS, clean_user_message, user_simulator_messages

ROLES = ("model", "user", "judge")
PROMPTS = (*USER_SIMULATOR_PROMPTS, *score_judge.PROMPTS)


# ---------------------------------------------------------------- records


TurnScore = JudgedScore  # the judge's score of one reply


class EvalTurn(Record):
    turn: int = Field(ge=1)
    user: str
    reply: str
    finish_reason: str = "stop"
    reply_tokens: int = 0
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
    return read_records(path, EvalRecord, allow_empty=True)


# ---------------------------------------------------------------- persona pairs


def ordered_pairs(profiles: Sequence[Persona], personalities: Sequence[Persona]) -> list[PersonaPair]:
    """Every (profile, personality) pair, in an order whose every prefix spreads over both lists.

    Pair i takes profile i mod P and personality (i mod P + i div P) mod Q: the first min(P, Q)
    pairs use distinct profiles and distinct personalities, so `--limit 5` on the 20 x 5 benchmark
    meets 5 different people, and the full list still holds each pair exactly once.
    """
    count_p, count_q = len(profiles), len(personalities)
    pairs = []
    for index in range(count_p * count_q):
        p = index % count_p
        q = (p + index // count_p) % count_q
        pairs.append(PersonaPair(pair_id(profiles[p], personalities[q]), profiles[p], personalities[q]))
    return pairs


def personas_hash(profiles: Sequence[Persona], personalities: Sequence[Persona]) -> str:
    payload = json.dumps([[(p.id, p.text) for p in profiles], [(p.id, p.text) for p in personalities]])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def settings_hash(identity: dict) -> str:
    """A short hash of the settings that decide what a run's numbers mean (not how fast it ran)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def prompt_hashes() -> dict[str, str]:
    return {name: prompt_hash(name) for name in PROMPTS}


# ---------------------------------------------------------------- the engine


@dataclass
class RoleModels:
    model: ChatModel  # the model under test
    user: ChatModel
    judge: ChatModel


@dataclass(frozen=True)
class RoleParams:
    model: SamplingParams
    user: SamplingParams
    judge: SamplingParams


@dataclass
class _State:
    pair: PersonaPair
    turns: list[EvalTurn] = field(default_factory=list)
    stopped: str | None = None

    def history(self) -> list[Message]:
        messages: list[Message] = []
        for turn in self.turns:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.reply})
        return messages


class AloeEvaluation:
    """Runs benchmark conversations in lockstep: each role's calls for turn k are one batch."""

    def __init__(self, models: RoleModels, params: RoleParams, turns: int, run_hash: str, max_attempts: int = 3):
        if turns < 1:
            raise AloeError(f"--turns must be at least 1, got {turns}")
        self.models = models
        self.params = params
        self.turns = turns
        self.run_hash = run_hash
        self.max_attempts = max_attempts

    def run(self, pairs: Sequence[PersonaPair], on_finish: Callable[[EvalRecord], None], group_size: int = 100) -> None:
        """Evaluate every pair; each group's records go to `on_finish` once the group has finished."""
        for start in range(0, len(pairs), max(1, group_size)):
            states = [_State(pair) for pair in pairs[start:start + group_size]]
            for k in range(self.turns):
                active = [state for state in states if state.stopped is None]
                if not active:
                    break
                self._advance(active, k)
            for state in states:
                on_finish(self._record(state))

    def _advance(self, active: list[_State], k: int) -> None:
        # 1. the simulated user speaks; an empty message is re-sampled, then ends that conversation
        prompts = [user_simulator_messages(s.pair.profile.text, s.pair.personality.text, s.history()) for s in active]
        messages: list[str] = [""] * len(active)
        todo = list(range(len(active)))
        for attempt in range(self.max_attempts):
            if not todo:
                break
            replies = self.models.user.generate([prompts[i] for i in todo], self.params.user, [attempt] * len(todo))
            for position, reply in zip(todo, replies):
                messages[position] = clean_user_message(reply.text)
            todo = [position for position in todo if not messages[position]]
        speaking = []
        for position, state in enumerate(active):
            if messages[position]:
                speaking.append((state, messages[position]))
            else:
                state.stopped = f"the user simulator gave an empty message at turn {k + 1} ({self.max_attempts} attempts)"

        # 2. the model under test sees the conversation only, exactly as a user would show it
        chats = [[*state.history(), {"role": "user", "content": message}] for state, message in speaking]
        replies = self._generate(self.models.model, chats, self.params.model)

        # 3. the judge scores every reply; the unparsed ones are asked once more with a reminder
        judged = self.judge([(state.pair, message, reply.text) for (state, message), reply in zip(speaking, replies)])
        for (state, message), reply, score in zip(speaking, replies, judged):
            state.turns.append(EvalTurn(turn=k + 1, user=message, reply=reply.text, finish_reason=reply.finish_reason,
                                        reply_tokens=reply.completion_tokens, judge=score))

    def judge(self, items: Sequence[tuple[PersonaPair, str, str]],
              earlier: Sequence[list[Verdict[int]]] | None = None) -> list[TurnScore]:
        """Scores for (pair, user message, reply) items: one batch, then one reminder batch for the unparsed.

        `earlier` holds each item's asks from a previous run; they are kept, and their count is the new
        ask's sample index, so a re-ask is a fresh sample rather than a replay from the response cache.
        """
        prompts = [score_judge.judge_messages(pair.profile.text, pair.personality.text, message, reply)
                   for pair, message, reply in items]
        attempts: list[list[Verdict[int]]] = [list(history) for history in earlier] if earlier else [[] for _ in items]
        asks = [len(history) for history in attempts]
        for reply, history in zip(self._generate(self.models.judge, prompts, self.params.judge, asks), attempts):
            history.append(score_judge.parse_score(reply.text))
        retry = [i for i, history in enumerate(attempts) if not history[-1].parsed]
        reminders = [score_judge.reminder_messages(prompts[i], attempts[i][-1]) for i in retry]
        for position, reply in zip(retry, self._generate(self.models.judge, reminders, self.params.judge,
                                                         [asks[i] for i in retry])):
            attempts[position].append(score_judge.parse_score(reply.text))
        return [TurnScore(**score_judge.ScoreJudgement(history).as_dict()) for history in attempts]

    def rejudge(self, records: Sequence[EvalRecord]) -> list[EvalRecord]:
        """Ask the judge again about every stored turn without a score; returns the records that changed.

        Stored raw outputs are first re-read with the current parser (free); only turns that still hold
        no score cost new calls, all of them in one batch.
        """
        changed: dict[str, EvalRecord] = {}
        todo: list[tuple[EvalRecord, EvalTurn, list[Verdict[int]]]] = []
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
                    todo.append((record, turn, verdicts))
        if todo:
            pairs = {record.id: _pair_of(record) for record, _, _ in todo}
            scores = self.judge([(pairs[record.id], turn.user, turn.reply) for record, turn, _ in todo],
                                [verdicts for _, _, verdicts in todo])
            for (record, turn, _), score in zip(todo, scores):
                turn.judge = score
                changed[record.id] = record
        return list(changed.values())

    @staticmethod
    def _generate(model: ChatModel, prompts: list[list[Message]], params: SamplingParams,
                  sample_indices: list[int] | None = None) -> list[Reply]:
        if not prompts:
            return []
        return model.generate(prompts, params, sample_indices)
    def _record(self, state: _State) -> EvalRecord:
        pair = state.pair
        return EvalRecord(id=pair.id, profile_id=pair.profile.id, personality_id=pair.personality.id,
                          profile=pair.profile.text, personality=pair.personality.text,
                          turns=state.turns, stopped=state.stopped, settings_hash=self.run_hash)


def _pair_of(record: EvalRecord) -> PersonaPair:
    profile = Persona(id=record.profile_id, text=record.profile)
    personality = Persona(id=record.personality_id, text=record.personality)
    return PersonaPair(record.id, profile, personality)


# ---------------------------------------------------------------- results


def result_metrics(records: Sequence[EvalRecord], turns: int, bootstrap_samples: int = 1000, seed: int = 0) -> dict:
    return alignment_metrics([record.scores() for record in records], turns, bootstrap_samples, seed)


def first_unparsed_reason(records: Sequence[EvalRecord]) -> str | None:
    for record in records:
        for turn in record.turns:
            if turn.judge.score is None:
                return turn.judge.reason
    return None


def plot_levels(curves: Sequence[tuple[str, dict]], path: str | Path, title: str = "ALOE alignment level per turn") -> Path:
    """One line per (label, metrics) with its bootstrap band: AL(k) against turn k, on the 1-5 scale."""
    from matplotlib.ticker import MaxNLocator

    from aloe.plots import pyplot, save_figure

    plt = pyplot()

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for label, metrics in curves:
        rows = [row for row in metrics["per_turn"] if row["al"] is not None]
        turns = [row["turn"] for row in rows]
        line, = axes.plot(turns, [row["al"] for row in rows], marker="o", label=label)
        banded = [row for row in rows if row["al_ci"] is not None]
        if banded:
            axes.fill_between([row["turn"] for row in banded], [row["al_ci"][0] for row in banded],
                              [row["al_ci"][1] for row in banded], color=line.get_color(), alpha=0.18, linewidth=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("turn k")
    axes.set_ylabel("alignment level AL(k)")
    axes.set_ylim(0.8, 5.2)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path)
