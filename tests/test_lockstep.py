"""The lockstep engine: one batch per role per step, checked re-sampling with fresh sample indices,
one report per item, and a model failure that fails the active items."""

import pytest

from aloe.errors import AloeError, ModelCallError
from aloe.lockstep import Roles, generate_checked, history, non_empty, run_lockstep, run_step
from aloe.models.base import ChatModel, Reply, SamplingParams


class Scripted(ChatModel):
    """Answers from a function of (prompt text, sample index); records every batch."""

    spec = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.batches = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        indices = list(sample_indices or [0] * len(conversations))
        self.batches.append([(conv[-1]["content"], index) for conv, index in zip(conversations, indices)])
        return [Reply(self.answer(conv[-1]["content"], index)) for conv, index in zip(conversations, indices)]


def parse_number(text):
    return (int(text), None) if text.isdigit() else (None, "not a number")


def test_run_step_builds_generates_once_parses_and_resamples_only_the_rejected():
    model = Scripted(lambda prompt, index: "7" if prompt == "a" or index == 1 else "" if prompt == "c" else "x")
    outcomes = run_step(["a", "b", "c"], lambda item: [{"role": "user", "content": item}], model,
                        SamplingParams(), parse_number, max_attempts=2)
    assert [o.value for o in outcomes] == [7, 7, 7]
    assert all(o.ok for o in outcomes) and [o.attempts for o in outcomes] == [1, 2, 2]
    # one batch of all three, then one batch of the two rejected, as a new sample (index 1)
    assert model.batches == [[("a", 0), ("b", 0), ("c", 0)], [("b", 1), ("c", 1)]]


def test_a_value_rejected_every_time_gets_a_reason_or_is_kept():
    model = Scripted(lambda prompt, index: "nope")
    prompts = [[{"role": "user", "content": "q"}]]
    [outcome] = generate_checked(model, prompts, SamplingParams(), parse_number, max_attempts=3)
    assert not outcome.ok and outcome.reason == "not a number after 3 attempts" and outcome.raw == "nope"
    [kept] = generate_checked(model, prompts, SamplingParams(), parse_number, max_attempts=1, first_sample=5,
                              keep_unaccepted=True)
    assert kept.ok and kept.value is None and model.batches[-1] == [("q", 5)]
    assert generate_checked(model, [], SamplingParams(), non_empty) == []


def test_history_and_roles():
    assert history([("hi", "hello")]) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    roles = Roles.fill(("user", "judge"), 1, judge=2)
    assert (roles.user, roles.judge, list(roles)) == (1, 2, ["user", "judge"])
    with pytest.raises(AloeError, match="missing role"):
        roles.require(["user", "assistant"])


def test_run_lockstep_groups_steps_and_reports_each_item_once():
    steps, finished, failed = [], [], []

    def advance(active, k):
        steps.append(([s.item for s in active], k))
        for state in active:
            if state.item == 2 and k == 0:
                state.done = state.reported = True
                failed.append(state.item)
            elif state.item == 3 and k == 1:
                state.done, state.stopped = True, "stopped"
            else:
                state.turns.append(k)

    run_lockstep([1, 2, 3, 4], 3, advance, lambda s: finished.append((s.item, s.turns, s.stopped)), group_size=3)
    assert steps == [([1, 2, 3], 0), ([1, 3], 1), ([1], 2), ([4], 0), ([4], 1), ([4], 2)]
    assert failed == [2]
    assert finished == [(1, [0, 1, 2], None), (3, [0], "stopped"), (4, [0, 1, 2], None)]


def test_a_failed_model_call_fails_the_active_items_and_is_raised():
    failed = []

    def advance(active, k):
        if k == 1:
            raise ModelCallError("server gone")

    with pytest.raises(ModelCallError):
        run_lockstep(["a", "b"], 2, advance, lambda s: pytest.fail("nothing finishes"),
                     lambda s, k, reason: failed.append((s.item, k, reason)))
    assert failed == [("a", 1, "server gone"), ("b", 1, "server gone")]
