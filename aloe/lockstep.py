"""The lockstep engine: many items advanced together through a sequence of role calls.

Every method's generating stage has the same shape: N items (conversations, preference pairs,
instructions), each needing one or more model calls per step. Running step k of all items as ONE
batch per role lets a local model fill its batch and an API model its concurrency; the response
cache (aloe/cache.py) makes every call resumable, because a re-run replays what was answered.

Two levels, pick the smaller that fits:

* `run_step` - a ONE-STEP stage: for N items, build each prompt, generate them in one batch,
  parse each output, re-sample the rejected ones (new sample index, so the cache does not replay
  the failure), and return one `Outcome` per item: the parsed value or why there is none.
  Persona inference and system-message generation are exactly this::

      outcomes = run_step(pairs, build=lambda pair: [{"role": "user", "content": render(...)}],
                          model=pool.get(spec), params=params, parse=parse_persona, max_attempts=3)
      for pair, outcome in zip(pairs, outcomes):
          write(pair, outcome.value) if outcome.ok else fail(pair, outcome.reason)

  `generate_checked` is the same with the prompts already built.

* `run_lockstep` - a MULTI-STEP stage (a conversation of K turns): items are cut into groups,
  each group gets one `ItemState` per item, and `advance(active_states, k)` runs step k for the
  group's active items (calling `generate_checked` once per role). The engine reports each item
  once, through `finish` or `fail`.

`history` turns (user, assistant) pairs into chat messages; `generate` is the one guarded batch
call (an empty batch makes no call) and `generate_some` the same for a stage that goes on without
the requests that failed after the backend's retries (`IncompleteBatch`): `generate_checked` uses it,
so such an item's `Outcome` is `failed` (the stage records it; a later run asks again). Sharding is the caller's `take_shard` on the item list before
`run_lockstep` (items are independent; ids and seeds come from the items, never from positions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aloe.errors import AloeError, IncompleteBatch
from aloe.messages import Message
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.progress import Progress

I = TypeVar("I")  # an item
V = TypeVar("V")  # a parsed value

# A parser/check: raw model text -> (value, None) when accepted, (value or None, reason) when not.
Check = Callable[[str], tuple[Any, "str | None"]]


class Roles(Generic[V]):
    """Something per role, by role name: `Roles(user=model_a, judge=model_b).judge`.

    Engines use it for their role models and for per-role sampling parameters.
    """

    def __init__(self, **by_role: V):
        self._by_role = dict(by_role)

    def __getattr__(self, role: str) -> V:
        try:
            return self.__dict__["_by_role"][role]
        except KeyError:
            raise AttributeError(f"no role {role!r} (roles: {', '.join(self.__dict__.get('_by_role', {}))})") from None

    def __getitem__(self, role: str) -> V:
        return self._by_role[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_role)

    def items(self):
        return self._by_role.items()

    def require(self, roles: Iterable[str]) -> "Roles[V]":
        """Self, after checking every role an engine calls is present."""
        missing = [role for role in roles if role not in self._by_role]
        if missing:
            raise AloeError(f"missing role(s) {', '.join(missing)}")
        return self

    @classmethod
    def fill(cls, roles: Iterable[str], default: V, **overrides: V) -> "Roles[V]":
        """`default` for every role, except the ones named."""
        return cls(**{role: overrides.get(role, default) for role in roles})


def history(turns: Iterable[tuple[str, str]]) -> list[Message]:
    """The chat of (user message, assistant reply) turns, with explicit roles."""
    messages: list[Message] = []
    for user, assistant in turns:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    return messages


REQUEST_FAILED = "request failed after its retries"  # how a reason says that nothing was answered


def generate(model: ChatModel, prompts: Sequence[Sequence[Message]], params: SamplingParams,
             sample_indices: Sequence[int] | int = 0, progress: Progress | None = None) -> list[Reply]:
    """One batch call (none for an empty batch). An int sample index applies to every prompt.

    `progress` advances by one per reply as replies arrive (cached ones at the end)."""
    if not prompts:
        return []
    if isinstance(sample_indices, int):
        sample_indices = [sample_indices] * len(prompts)
    counted = 0

    def tick(_position: int, _reply: Reply) -> None:
        nonlocal counted
        counted += 1
        progress.update(1)

    try:
        return model.generate([list(prompt) for prompt in prompts], params, sample_indices=list(sample_indices),
                              on_reply=tick if progress is not None else None)
    finally:
        if progress is not None:
            progress.update(len(prompts) - counted)


def generate_some(model: ChatModel, prompts: Sequence[Sequence[Message]], params: SamplingParams,
                  sample_indices: Sequence[int] | int = 0, progress: Progress | None = None
                  ) -> tuple[list[Reply | None], dict[int, str]]:
    """`generate` for a stage that goes on without the requests that failed after their retries:
    (replies, None where a request failed; position -> why it failed). Any other error still raises."""
    try:
        return generate(model, prompts, params, sample_indices, progress), {}
    except IncompleteBatch as exc:
        return list(exc.replies), {position: f"{REQUEST_FAILED}: {why}" for position, why in exc.failures.items()}


@dataclass(frozen=True)
class Outcome(Generic[V]):
    """One item's result of a checked generation.

    `value` is the parsed output (with `keep_unaccepted`, also the last rejected one); `reason` is None
    when accepted, else why not ("empty reply after 2 attempts"); `raw` the last output's text,
    `attempts` how many samples were drawn and `reply` the last reply (its finish reason, token counts).
    `failed`: the request failed after the backend's retries, so nothing was answered (or cached): the
    stage records the item as failed and a later run asks the same again.
    """

    value: V | None
    reason: str | None
    raw: str = ""
    attempts: int = 0
    failed: bool = False
    reply: Reply | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def generate_checked(model: ChatModel, prompts: Sequence[Sequence[Message]], params: SamplingParams,
                     check: Check, max_attempts: int = 2, *, first_sample: int = 0,
                     keep_unaccepted: bool = False, progress: Progress | None = None) -> list[Outcome]:
    """One batch call; outputs that `check` rejects are re-sampled as one smaller batch, up to
    `max_attempts` samples per prompt in all.

    Attempt a uses sample index `first_sample + a`, so a re-sample is a new draw that the response
    cache stores under its own key (and a re-run replays the same draws). With `keep_unaccepted` an
    output still rejected after the last attempt is returned as accepted (the caller stores its
    reason elsewhere, e.g. a judge's unparsed verdict). A request that failed after the backend's
    retries is a `failed` outcome at once: it is neither re-sampled nor kept.
    """
    outcomes: list[Outcome] = [Outcome(None, "not generated")] * len(prompts)
    todo = list(range(len(prompts)))
    for attempt in range(max_attempts):
        if not todo:
            break
        replies, failures = generate_some(model, [prompts[i] for i in todo], params, first_sample + attempt,
                                          progress if attempt == 0 else None)
        for slot, (position, reply) in enumerate(zip(todo, replies)):
            if slot in failures:
                outcomes[position] = Outcome(None, failures[slot], "", attempt + 1, failed=True)
                continue
            value, reason = check(reply.text)
            if reason is not None and attempt + 1 == max_attempts:
                reason = None if keep_unaccepted else f"{reason} after {max_attempts} attempts"
            outcomes[position] = Outcome(value, reason, reply.text, attempt + 1, reply=reply)
        todo = [position for position in todo if not outcomes[position].ok and not outcomes[position].failed]
    return outcomes


def run_step(items: Sequence[I], build: Callable[[I], Sequence[Message]], model: ChatModel,
             params: SamplingParams, parse: Check, max_attempts: int = 2) -> list[Outcome]:
    """A one-step stage: `build` each item's prompt, generate all in one batch, `parse` each output,
    re-sample rejected ones (see `generate_checked`); one `Outcome` per item, in order."""
    return generate_checked(model, [build(item) for item in items], params, parse, max_attempts)


def non_empty(text: str) -> tuple[str, str | None]:
    """The simplest check: the stripped text, rejected when empty."""
    text = text.strip()
    return text, None if text else "empty reply"


@dataclass
class ItemState(Generic[I]):
    """One item in a multi-step run: its committed turns and whether it is still advancing.

    `done` stops further steps; `reported` says the item already went to `finish` or `fail`.
    `stopped` is an engine's note of why an item ended early (it is still reported through `finish`).
    """

    item: I
    turns: list = field(default_factory=list)
    done: bool = False
    reported: bool = False
    stopped: str | None = None


def run_lockstep(items: Sequence[I], steps: int, advance: Callable[[list[ItemState[I]], int], None],
                 finish: Callable[[ItemState[I]], None], fail: Callable[[ItemState[I], int, str], None] | None = None,
                 group_size: int | None = None, on_group: Callable[[int, int], None] | None = None,
                 desc: str | None = None, unit: str = "steps") -> None:
    """Advance `items` through `steps` steps, `group_size` items at a time (all at once by default).

    `advance(active, k)` runs step k for the group's states that are not `done`; it may end a state
    (`done=True`), report it itself (`reported=True` after calling finish or fail), or leave it.
    When the group's steps are over, every state not yet reported goes to `finish`, in item order.
    An AloeError out of `advance` (a model call that failed for good) goes to `fail` for every state
    still active, with the step index, and is re-raised: nothing after it could succeed either.
    `on_group(start, end)` is called after each group (for progress logs). With `desc`, progress
    (`aloe.progress`) counts item-steps on stderr: "conversations: 12/40 turns".
    """
    size = max(1, group_size or len(items) or 1)
    with Progress(len(items) * steps, desc or "", unit, enabled=desc is not None) as progress:
        for start in range(0, len(items), size):
            states = [ItemState(item) for item in items[start:start + size]]
            for k in range(steps):
                active = [state for state in states if not state.done]
                if not active:
                    progress.update(len(states) * (steps - k))  # the steps the group no longer needs
                    break
                try:
                    advance(active, k)
                except AloeError as exc:
                    if fail is not None:
                        for state in active:
                            if not state.reported:
                                state.done = state.reported = True
                                fail(state, k, str(exc))
                    raise
                progress.update(len(states))
            for state in states:
                if not state.reported:
                    state.done = state.reported = True
                    finish(state)
            if on_group is not None:
                on_group(start, start + len(states))
