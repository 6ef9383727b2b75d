"""Synthetic users: the paper's scalar experiment, exactly, and users with opposite tastes over texts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from aloe.errors import AloeError
from aloe.steerable.data import Comparison

# The paper's two hidden users over options y in [0, 1]: both rank y < 0.5 by y; above it user 0
# prefers the larger option (reward 2y) and user 1 the one nearer 0.5 (reward 1 - y).
SCALAR_REWARDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "user-0": lambda y: np.where(y < 0.5, y, 2 * y),
    "user-1": lambda y: np.where(y < 0.5, y, 1 - y),
}


def scalar_splits(pairs: int = 20_000, seed: int = 0) -> dict[str, list[Comparison]]:
    """The paper's synthetic data: `np.random.seed(seed)`, the options, then the split, in that order.

    Drawing with the legacy global RNG in this order reproduces the paper's 16,039 / 2,025 / 1,936 split.
    """
    np.random.seed(seed)
    options = np.random.rand(pairs, 2)
    split = np.random.choice(["train", "val", "test"], pairs, p=[0.8, 0.1, 0.1])
    out: dict[str, list[Comparison]] = {"train": [], "val": [], "test": []}
    for user, reward in SCALAR_REWARDS.items():
        choices = (reward(options[:, 1]) > reward(options[:, 0])).astype(int)
        for i in range(pairs):
            out[split[i]].append(Comparison(user=user, pair_id=f"pair-{i:05d}", option_a=[float(options[i, 0])],
                                            option_b=[float(options[i, 1])], choice=int(choices[i])))
    return out


# ---------------------------------------------------------------- text users

# Observable attributes of a response, each a number a user can like or dislike. Two users per
# attribute with opposite signs: on pairs that differ mostly in that attribute they always disagree.
def _words(text: str) -> list[str]:
    return text.split()


TEXT_ATTRIBUTES: dict[str, Callable[[str], float]] = {
    "length": lambda text: float(len(_words(text))),
    "lists": lambda text: float(sum(line.lstrip().startswith(("-", "*", "1.", "2.", "3.")) for line in text.splitlines())),
    "hedging": lambda text: float(sum(text.lower().count(w) for w in ("might", "perhaps", "may ", "possibly", "it depends"))),
    "formality": lambda text: float(-sum(text.lower().count(w) for w in ("!", "hey", "gonna", "stuff", "cool", "you'll"))),
}


def text_users(attributes: Sequence[str]) -> dict[str, tuple[str, int]]:
    """`{user name: (attribute, sign)}`: for each attribute a user who wants more of it and one who wants less."""
    unknown = [a for a in attributes if a not in TEXT_ATTRIBUTES]
    if unknown:
        raise AloeError(f"unknown text attribute(s) {unknown}; known: {', '.join(TEXT_ATTRIBUTES)}")
    return {f"{a}-{'more' if sign > 0 else 'less'}": (a, sign) for a in attributes for sign in (1, -1)}


def text_choices(texts_a: Sequence[str], texts_b: Sequence[str],
                 users: dict[str, tuple[str, int]]) -> dict[str, list[int | None]]:
    """Each user's choice on each pair (None where the attribute does not tell the options apart)."""
    out: dict[str, list[int | None]] = {}
    for name, (attribute, sign) in users.items():
        score = TEXT_ATTRIBUTES[attribute]
        choices: list[int | None] = []
        for a, b in zip(texts_a, texts_b):
            diff = sign * (score(b) - score(a))
            choices.append(None if diff == 0 else int(diff > 0))
        out[name] = choices
    return out
