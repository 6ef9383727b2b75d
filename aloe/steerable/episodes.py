"""Episodes: a task is one user, k of their choices as context and a set of their other choices as targets.

Context and targets are drawn disjoint, so accuracy is measured on choices the model did not see;
`overlap=True` draws the context from among the targets instead (the original code's setup, kept
for comparison). Every epoch draws fresh tasks from a generator seeded by (seed, epoch), so runs
are reproducible and no two epochs replay the same tasks; `original_sampling=True` reproduces the
original code's sampling instead (one k per batch, the same tasks every epoch), for comparison.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from aloe.errors import AloeError
from aloe.steerable.data import Split
from aloe.steerable.models import Batch


@dataclass
class Tasks:
    """Row indices into a split: (tasks, K) context rows with their mask, (tasks, T) target rows."""

    user: np.ndarray  # (tasks,)
    context: np.ndarray  # (tasks, K) int64 (padding rows point at row 0 and are masked)
    context_mask: np.ndarray  # (tasks, K) bool
    targets: np.ndarray  # (tasks, T) int64
    target_mask: np.ndarray | None = None  # (tasks, T) bool, None when every target is scored

    def __len__(self) -> int:
        return len(self.user)

    def select(self, index: slice) -> "Tasks":
        return Tasks(self.user[index], self.context[index], self.context_mask[index], self.targets[index],
                     None if self.target_mask is None else self.target_mask[index])


class EpisodeSampler:
    def __init__(self, split: Split, targets: int = 20, overlap: bool = False):
        self.split = split
        self.targets = targets
        self.overlap = overlap
        self.rows = split.rows_by_user()

    def pairs_needed(self, k: int) -> int:
        return self.targets if self.overlap else self.targets + k

    def eligible_users(self, k_max: int) -> list[int]:
        return [u for u, rows in self.rows.items() if len(rows) >= self.pairs_needed(k_max)]

    def check_k(self, k_max: int, split_name: str = "split") -> list[int]:
        """The users with enough choices for k_max context pairs plus the targets; an error if none has."""
        users = self.eligible_users(k_max)
        if not users:
            most = max((len(rows) for rows in self.rows.values()), default=0)
            need = self.pairs_needed(k_max)
            raise AloeError(f"k={k_max} with {self.targets} targets needs {need} choices of one user, but the "
                            f"{split_name} split's users have at most {most}; lower k or --targets")
        return users

    def draw(self, count: int, rng: np.random.Generator, ks: Sequence[int] | int) -> Tasks:
        """`count` tasks; the k of each is drawn uniformly from `ks` (or fixed when an int)."""
        ks_array = np.full(count, ks) if isinstance(ks, int) else rng.choice(np.asarray(ks), size=count)
        k_max = int(ks_array.max()) if count else 0
        users = np.asarray(self.check_k(k_max))
        # Users are drawn among those who can serve the largest k, so every task's k is possible.
        chosen_users = rng.choice(users, size=count)
        width = max(k_max, 1)
        context = np.zeros((count, width), dtype=np.int64)
        context_mask = np.zeros((count, width), dtype=bool)
        targets = np.zeros((count, self.targets), dtype=np.int64)
        target_mask = np.ones((count, self.targets), dtype=bool) if self.overlap else None
        for i, (user, k) in enumerate(zip(chosen_users.tolist(), ks_array.tolist())):
            rows = self.rows[user]
            drawn = rows[rng.choice(len(rows), size=self.pairs_needed(k), replace=False)]
            targets[i] = drawn[:self.targets]
            if self.overlap:
                # The original: context at random positions among the targets; its "unseen" score
                # drops the first k positions, so context pairs can still be scored.
                context[i, :k] = targets[i, rng.choice(self.targets, size=k, replace=False)]
                target_mask[i, :k] = False
            else:
                context[i, :k] = drawn[self.targets:]
            context_mask[i, :k] = True
        return Tasks(chosen_users, context, context_mask, targets, target_mask)

    def batch(self, tasks: Tasks, score_all: bool = True) -> Batch:
        """Tensors for the tasks; `score_all=False` applies the overlap setup's "unseen" target mask."""
        s = self.split
        as_tensor = torch.from_numpy
        mask = None if score_all or tasks.target_mask is None else as_tensor(tasks.target_mask)
        return Batch(
            target_a=as_tensor(s.option_a[tasks.targets]), target_b=as_tensor(s.option_b[tasks.targets]),
            target_choice=as_tensor(s.choice[tasks.targets]).float(),
            context_a=as_tensor(s.option_a[tasks.context]), context_b=as_tensor(s.option_b[tasks.context]),
            context_choice=as_tensor(s.choice[tasks.context]).float(), context_mask=as_tensor(tasks.context_mask),
            target_mask=mask,
        )

    def epoch(self, seed: int, epoch: int, steps: int, batch_size: int, ks: Sequence[int],
              original_sampling: bool = False) -> Iterator[Batch]:
        """`steps` batches of fresh tasks, reproducible from (seed, epoch) and different for every epoch.

        `original_sampling`: the original code's regime, kept to explain its lower curve: its dataset
        owned one fixed generator, so every epoch replayed the same tasks, and a batch shared one k.
        """
        rng = np.random.default_rng([seed, 1 if original_sampling else epoch])
        for _ in range(steps):
            batch_ks = int(rng.choice(np.asarray(ks))) if original_sampling else ks
            yield self.batch(self.draw(batch_size, rng, batch_ks))


def fixed_tasks(sampler: EpisodeSampler, count: int, k: int | Sequence[int], seed: int) -> Tasks:
    """The same tasks for every model evaluated with the same data, count, k and seed."""
    key = [seed, *([k] if isinstance(k, int) else k)]
    return sampler.draw(count, np.random.default_rng(key), k)
