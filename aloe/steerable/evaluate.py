"""Accuracy vs k on the test split: held-out targets, the same tasks for every model, batched forward passes.

Per model and k: accuracy (mean and SEM over tasks, and per user), target NLL, expected calibration
error, and the original code's metric beside it (context drawn from the targets, the first k target
positions dropped), labelled as such. What the data allows is computed from the data: the best
user-agnostic accuracy (the ceiling) and the accuracy of a predictor that knows the user (the oracle).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aloe.steerable.data import Split, agreement_rate, oracle_accuracy, user_agnostic_ceiling
from aloe.steerable.episodes import EpisodeSampler, Tasks, fixed_tasks
from aloe.steerable.models import RewardModel

CALIBRATION_BINS = 10


def mean_sem(values: np.ndarray) -> dict:
    n = len(values)
    sem = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    return {"mean": float(values.mean()), "sem": sem, "n_tasks": n}


def calibration_error(prob_b: np.ndarray, choice: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error of the predicted choice's confidence, over equal-width bins."""
    confidence = np.maximum(prob_b, 1 - prob_b)
    correct = (prob_b > 0.5) == (choice == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(error)


def predict(model: RewardModel, sampler: EpisodeSampler, tasks: Tasks, score_all: bool, chunk: int = 256):
    """Probabilities of option b, choices and the scored-target mask, (tasks, targets) each.

    Chunks of 256 tasks: on a CPU thread one pass over all 1,920 tasks of a k was slower (see docs/BENCHMARKS.md).
    """
    probs, choices, masks = [], [], []
    with torch.no_grad():
        for start in range(0, len(tasks), chunk):
            batch = sampler.batch(tasks.select(slice(start, start + chunk)), score_all=score_all)
            probs.append(model.prob_b(batch).numpy())
            choices.append(batch.target_choice.numpy())
            masks.append(np.ones_like(choices[-1], dtype=bool) if batch.target_mask is None else batch.target_mask.numpy())
    return np.concatenate(probs), np.concatenate(choices), np.concatenate(masks)


def score(prob_b: np.ndarray, choice: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-task accuracy over scored targets, the mean NLL and the calibration error."""
    correct = ((prob_b > 0.5) == (choice == 1)) & mask
    per_task = correct.sum(1) / np.maximum(mask.sum(1), 1)
    p_choice = np.clip(np.where(choice == 1, prob_b, 1 - prob_b), 1e-7, 1)
    nll = float(-np.log(p_choice)[mask].mean())
    return per_task, nll, calibration_error(prob_b[mask], choice[mask])


def bayes_optimal(split: Split, tasks: Tasks) -> np.ndarray:
    """Per-task accuracy of the best possible predictor that knows the users' choice tables but not which user.

    The posterior over users (uniform prior) keeps those whose choices match every context pair (a
    user who never judged a pair neither gains nor loses); each target is predicted by the posterior
    vote. Computed from the data, it is the curve no model can beat on these tasks.
    """
    table = np.full((len(split.users), len(split.pair_ids)), np.nan)
    table[split.user, split.pair] = split.choice
    context_pairs = split.pair[tasks.context]  # (tasks, K)
    context_choice = split.choice[tasks.context]
    votes = table[:, context_pairs]  # (users, tasks, K)
    agree = np.where(np.isnan(votes), 0.5, votes == context_choice[None])
    agree = np.where(tasks.context_mask[None], agree, 1.0)
    posterior = agree.prod(-1)
    posterior = posterior / posterior.sum(0, keepdims=True)  # the true user always has mass
    target_table = table[:, split.pair[tasks.targets]]  # (users, tasks, T)
    p_b = (posterior[..., None] * np.where(np.isnan(target_table), 0.5, target_table)).sum(0)
    choice = split.choice[tasks.targets]
    correct = np.where(np.isclose(p_b, 0.5), 0.5, (p_b > 0.5) == (choice == 1))
    return correct.mean(1)


def evaluate(models: Sequence[tuple[str, RewardModel]], split: Split, ks: Sequence[int], tasks: int = 1920,
             targets: int = 20, seed: int = 0) -> dict:
    """The result document: data facts and, per model, every metric per k (k keys are strings, as in JSON)."""
    held_out = EpisodeSampler(split, targets)
    original = EpisodeSampler(split, targets, overlap=True)
    for k in ks:
        held_out.check_k(k, "test")
    drawn = {k: fixed_tasks(held_out, tasks, k, seed) for k in ks}
    drawn_original = {k: fixed_tasks(original, tasks, k, seed) for k in ks if k < targets}
    result = {
        "split": "test", "ks": list(ks), "tasks_per_k": tasks, "targets": targets, "seed": seed,
        "users": split.users,
        "agreement_rate": agreement_rate(split),
        "user_agnostic_ceiling": user_agnostic_ceiling(split),
        "oracle": oracle_accuracy(split),
        "bayes_optimal": {str(k): mean_sem(bayes_optimal(split, drawn[k])) for k in ks},
        "models": {},
    }
    for name, model in models:
        model.eval()
        entry: dict = {"accuracy": {}, "accuracy_per_user": {}, "nll": {}, "calibration_error": {},
                       "accuracy_original_metric": {}}
        for k in ks:
            prob, choice, mask = predict(model, held_out, drawn[k], score_all=True)
            per_task, nll, ece = score(prob, choice, mask)
            entry["accuracy"][str(k)] = mean_sem(per_task)
            entry["nll"][str(k)] = nll
            entry["calibration_error"][str(k)] = ece
            users = drawn[k].user
            entry["accuracy_per_user"][str(k)] = {split.users[u]: mean_sem(per_task[users == u]) for u in np.unique(users)}
            if k in drawn_original:
                prob, choice, mask = predict(model, original, drawn_original[k], score_all=False)
                entry["accuracy_original_metric"][str(k)] = mean_sem(score(prob, choice, mask)[0])
        result["models"][name] = entry
    return result


def group_seeds(result: dict, labels: dict[str, str]) -> dict:
    """Models that share a label (one model trained with several seeds): mean over seeds and the spread.

    `labels` maps each result name to its group label; groups of one are left out.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for name, label in labels.items():
        members[label].append(name)
    groups = {}
    for label, names in members.items():
        if len(names) < 2:
            continue
        per_k = {}
        for k in map(str, result["ks"]):
            values = np.array([result["models"][n]["accuracy"][k]["mean"] for n in names])
            per_k[k] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                        "min": float(values.min()), "max": float(values.max()), "seeds": len(names)}
        groups[label] = {"members": names, "accuracy": per_k}
    return groups


def markdown_table(result: dict, per_model: bool = True) -> str:
    """Accuracy (%) per k: one row per model (mean ± SEM over tasks), then seed groups (mean ± sd over seeds).

    `per_model=False` leaves out the rows of models that belong to a seed group.
    """
    ks = [str(k) for k in result["ks"]]
    lines = ["| model | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    grouped = {name for group in result.get("seed_groups", {}).values() for name in group["members"]}
    for name, entry in result["models"].items():
        if not per_model and name in grouped:
            continue
        cells = []
        for k in ks:
            acc = entry["accuracy"][k]
            cells.append(f"{100 * acc['mean']:.1f} ± {100 * (acc['sem'] or 0):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for label, group in result.get("seed_groups", {}).items():
        cells = [f"{100 * group['accuracy'][k]['mean']:.1f} ± {100 * group['accuracy'][k]['std']:.1f}" for k in ks]
        lines.append(f"| **{label}** ({group['accuracy'][ks[0]]['seeds']} seeds, ± sd) | " + " | ".join(cells) + " |")
    bayes = result.get("bayes_optimal")
    if bayes:
        lines.append("| *Bayes-optimal (from the data)* | " + " | ".join(f"{100 * bayes[k]['mean']:.1f}" for k in ks) + " |")
    lines.append(f"\nUser-agnostic ceiling {100 * result['user_agnostic_ceiling']:.1f}%, "
                 f"oracle {100 * result['oracle']:.1f}% (from the test data; {result['tasks_per_k']} tasks per k, "
                 f"{result['targets']} held-out targets each).")
    return "\n".join(lines)


def plot_accuracy(result: dict, path: str | Path) -> Path:
    from aloe.plots import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    ks = result["ks"]
    series = ({label: {k: g["accuracy"][k]["mean"] for k in g["accuracy"]} for label, g in result["seed_groups"].items()}
              if result.get("seed_groups") else
              {name: {k: e["accuracy"][k]["mean"] for k in e["accuracy"]} for name, e in result["models"].items()})
    for label, values in series.items():
        axes.plot(ks, [100 * values[str(k)] for k in ks], marker="o", label=label)
    if result.get("bayes_optimal"):
        axes.plot(ks, [100 * result["bayes_optimal"][str(k)]["mean"] for k in ks], color="black", linestyle="-.",
                  linewidth=1, label="Bayes-optimal (data)")
    axes.axhline(100 * result["user_agnostic_ceiling"], color="grey", linestyle="--", label="user-agnostic ceiling")
    axes.axhline(100 * result["oracle"], color="black", linestyle=":", label="oracle")
    axes.set_xlabel("context pairs k")
    axes.set_ylabel("accuracy on held-out targets (%)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
