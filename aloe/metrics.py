"""Metrics with bootstrap intervals: ALOE's alignment levels, pairwise win rates, and accuracies.

## ALOE: alignment level per turn and how fast it improves

With s(j, k) the judge's score of conversation j at turn k (k = 1..K):

- AL(k)  = mean of s(j, k) over the conversations with a parsed score at turn k;
- IR     = least-squares slope of AL(k) on k;
- N-AL(k) = (AL(k) - min AL) / (max AL - min AL), all zeros when AL is flat;
- N-IR   = least-squares slope of N-AL(k) (0 when AL is flat); its R^2 equals the raw fit's R^2;
- mean AL = mean of AL(k) over the turns.

Every AL(k), IR, N-IR and the mean AL get a 95% percentile bootstrap interval that resamples whole
conversations, so the interval reflects which users happened to be in the benchmark. Turns where no
conversation has a parsed score have AL(k) = None and are left out of the fits.

## Pairwise win rates (judges/pairwise.py outcomes "a", "b", "tie", "unparsed")

- WR = B / (A + B): the share of decided items that B won; ties and unparsed items are left out
  (and counted); None when no item was decided.
- dPQ = WR_P + WR_Q - 1 over the personalization and quality win rates of the same items (-1..1):
  positive when B is more personalized than it is worse (or better) in quality.

## Accuracy

Share of correct answers among parsed ones; unparsed answers are counted apart, and the accuracy
with unparsed answers counted as wrong is reported too (some papers report it that way).

Every interval is a 95% percentile bootstrap that resamples items (for dPQ, the same items for both
criteria, so their correlation is kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Scores = Sequence[Sequence[float | None]]  # per conversation, per turn; None = unparsed; shorter = missing turns


def score_matrix(scores: Scores, turns: int) -> np.ndarray:
    """A (conversations, turns) float array with NaN where a score is unparsed or missing."""
    matrix = np.full((len(scores), turns), np.nan)
    for row, conversation in enumerate(scores):
        if len(conversation) > turns:
            raise ValueError(f"conversation {row} has {len(conversation)} scores for {turns} turns")
        for column, score in enumerate(conversation):
            if score is not None:
                matrix[row, column] = float(score)
    return matrix


def _nanmean_columns(matrix: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (without a warning) where a column has no value."""
    counts = np.sum(~np.isnan(matrix), axis=-2)
    sums = np.nansum(matrix, axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def alignment_levels(scores: Scores, turns: int) -> list[float | None]:
    """AL(k) for k = 1..turns: mean parsed score per turn, None where a turn has none."""
    return [_none_if_nan(value) for value in _nanmean_columns(score_matrix(scores, turns))]


def _fit(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and R^2 of each row of `curves` against k = 1..K, skipping NaN turns.

    Vectorised over rows so thousands of bootstrap curves fit at once. Slope is NaN with fewer
    than two finite points; R^2 is NaN where the curve is flat (no variance to explain).
    """
    curves = np.atleast_2d(curves)
    k = np.arange(1, curves.shape[1] + 1, dtype=float)
    mask = ~np.isnan(curves)
    n = mask.sum(axis=1)
    y = np.where(mask, curves, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        k_mean = (mask * k).sum(axis=1) / n
        y_mean = y.sum(axis=1) / n
        dk = np.where(mask, k - k_mean[:, None], 0.0)
        dy = np.where(mask, y - y_mean[:, None], 0.0)
        sxx = (dk * dk).sum(axis=1)
        sxy = (dk * dy).sum(axis=1)
        syy = (dy * dy).sum(axis=1)
        slope = np.where(n >= 2, sxy / sxx, np.nan)
        r2 = np.where((n >= 2) & (syy > 1e-12), sxy * sxy / (sxx * syy), np.nan)
    return slope, r2


def improvement_rate(levels: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(IR, R^2): the least-squares slope of AL(k) on k, and how well a line fits it."""
    slope, r2 = _fit(np.array([np.nan if v is None else v for v in levels], dtype=float))
    return _none_if_nan(slope[0]), _none_if_nan(r2[0])


def _normalize(curves: np.ndarray) -> np.ndarray:
    curves = np.atleast_2d(curves)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.nanmin(np.where(np.isnan(curves), np.inf, curves), axis=1, keepdims=True)
        high = np.nanmax(np.where(np.isnan(curves), -np.inf, curves), axis=1, keepdims=True)
        span = high - low
        # A flat curve has no range to normalize by: it is all zeros, so its N-IR is 0.
        return np.where(span > 1e-12, (curves - low) / np.where(span > 1e-12, span, 1.0),
                        np.where(np.isnan(curves), np.nan, 0.0))


def normalized_levels(levels: Sequence[float | None]) -> list[float | None]:
    """N-AL(k) = (AL(k) - min AL) / (max AL - min AL); zeros where AL is flat."""
    curve = np.array([np.nan if v is None else v for v in levels], dtype=float)
    if np.all(np.isnan(curve)):
        return [None] * len(levels)
    return [_none_if_nan(value) for value in _normalize(curve)[0]]


def normalized_improvement_rate(levels: Sequence[float | None]) -> float | None:
    """N-IR: the slope of N-AL(k) on k (0 for a flat curve; 1/(K-1) for a perfectly linear rise)."""
    normalized = normalized_levels(levels)
    if all(value is None for value in normalized):
        return None
    slope, _ = _fit(np.array([np.nan if v is None else v for v in normalized], dtype=float))
    return _none_if_nan(slope[0])


def parse_counts(scores: Scores, turns: int) -> list[dict[str, int]]:
    """Per turn: parsed scores, unparsed (judged, no score) and missing (the conversation has no such turn)."""
    counts = []
    for column in range(turns):
        present = [conversation[column] for conversation in scores if len(conversation) > column]
        parsed = sum(score is not None for score in present)
        counts.append({"parsed": parsed, "unparsed": len(present) - parsed, "missing": len(scores) - len(present)})
    return counts


def bootstrap(scores: Scores, turns: int, samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals for AL(k), mean AL, IR and N-IR from resampling conversations with replacement."""
    matrix = score_matrix(scores, turns)
    if samples < 1 or len(matrix) == 0:
        return {"al": [None] * turns, "mean_al": None, "ir": None, "n_ir": None}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(matrix), size=(samples, len(matrix)))
    curves = _nanmean_columns(matrix[picks])  # (samples, turns)
    means = np.array([np.nanmean(row) if np.any(~np.isnan(row)) else np.nan for row in curves])
    slopes, _ = _fit(curves)
    n_slopes, _ = _fit(_normalize(curves))
    return {
        "al": [percentile_interval(curves[:, column], level) for column in range(turns)],
        "mean_al": percentile_interval(means, level),
        "ir": percentile_interval(slopes, level),
        "n_ir": percentile_interval(n_slopes, level),
    }


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The central `level` percentile interval of bootstrap statistics, NaN ignored; None when all are NaN."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def alignment_metrics(scores: Scores, turns: int, samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Every ALOE metric for one run, with bootstrap intervals and parse counts, as a JSON-ready dict."""
    if turns < 1:
        raise ValueError(f"turns must be at least 1, got {turns}")
    levels = alignment_levels(scores, turns)
    ir, r2 = improvement_rate(levels)
    normalized = normalized_levels(levels)
    finite = [value for value in levels if value is not None]
    intervals = bootstrap(scores, turns, samples, seed, level)
    counts = parse_counts(scores, turns)
    parsed = sum(count["parsed"] for count in counts)
    unparsed = sum(count["unparsed"] for count in counts)
    return {
        "turns": turns,
        "conversations": len(scores),
        "per_turn": [
            {"turn": k + 1, "al": levels[k], "al_ci": intervals["al"][k], "n_al": normalized[k], **counts[k]}
            for k in range(turns)
        ],
        "al": levels,
        "n_al": normalized,
        "mean_al": float(np.mean(finite)) if finite else None,
        "mean_al_ci": intervals["mean_al"],
        "ir": ir,
        "ir_ci": intervals["ir"],
        "r2": r2,
        "n_ir": normalized_improvement_rate(levels),
        "n_ir_ci": intervals["n_ir"],
        "parsed": parsed,
        "unparsed": unparsed,
        "missing": sum(count["missing"] for count in counts),
        "parse_rate": parsed / (parsed + unparsed) if parsed + unparsed else None,
        "bootstrap": {"samples": samples, "seed": seed, "level": level, "resampled": "conversations"},
    }


def _none_if_nan(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


# ---------------------------------------------------------------- win rates and accuracy

OUTCOMES = ("a", "b", "tie", "unparsed")


def _outcome_matrix(outcomes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(won by A, won by B) as 0/1 arrays over items."""
    for outcome in outcomes:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    array = np.array(list(outcomes), dtype=object)
    return (array == "a").astype(float), (array == "b").astype(float)


def _win_rates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """WR = B / (A + B) along the last axis; NaN where nothing was decided."""
    wins_a, wins_b = a.sum(axis=-1), b.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wins_a + wins_b > 0, wins_b / np.maximum(wins_a + wins_b, 1), np.nan)


def win_rate(outcomes: Sequence[str]) -> float | None:
    """WR = B / (A + B), ties and unparsed items excluded; None when no item was decided."""
    a, b = _outcome_matrix(outcomes)
    return _none_if_nan(_win_rates(a, b))


def win_rate_metrics(outcomes: Sequence[str], samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Counts of each outcome, WR with its bootstrap interval and the parse rate."""
    a, b = _outcome_matrix(outcomes)
    counts = {outcome: int(sum(1 for o in outcomes if o == outcome)) for outcome in OUTCOMES}
    interval = None
    if samples >= 1 and len(outcomes):
        picks = np.random.default_rng(seed).integers(0, len(outcomes), size=(samples, len(outcomes)))
        interval = percentile_interval(_win_rates(a[picks], b[picks]), level)
    judged = len(outcomes) - counts["unparsed"]
    return {"items": len(outcomes), **counts, "win_rate": win_rate(outcomes), "win_rate_ci": interval,
            "parse_rate": judged / len(outcomes) if outcomes else None}


def delta_pq(personalization: Sequence[str], quality: Sequence[str], samples: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
    """dPQ = WR_P + WR_Q - 1 for outcomes of the same items in the same order, with a paired bootstrap."""
    if len(personalization) != len(quality):
        raise ValueError(f"personalization and quality outcomes must cover the same items "
                         f"({len(personalization)} vs {len(quality)})")
    pa, pb = _outcome_matrix(personalization)
    qa, qb = _outcome_matrix(quality)
    value = _win_rates(pa, pb) + _win_rates(qa, qb) - 1
    interval = None
    if samples >= 1 and len(quality):
        picks = np.random.default_rng(seed).integers(0, len(quality), size=(samples, len(quality)))
        interval = percentile_interval(_win_rates(pa[picks], pb[picks]) + _win_rates(qa[picks], qb[picks]) - 1, level)
    return {"delta_pq": _none_if_nan(value), "delta_pq_ci": interval}


def accuracy_metrics(correct: Sequence[bool | None], samples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Accuracy over parsed answers (None = unparsed) with a bootstrap interval, plus the count-as-wrong view."""
    values = np.array([np.nan if c is None else float(c) for c in correct], dtype=float)
    parsed = values[~np.isnan(values)]
    right = int(parsed.sum())
    interval = None
    if samples >= 1 and len(parsed):
        picks = np.random.default_rng(seed).integers(0, len(parsed), size=(samples, len(parsed)))
        interval = percentile_interval(parsed[picks].mean(axis=1), level)
    return {
        "items": len(values), "correct": right, "wrong": int(len(parsed) - right),
        "unparsed": int(len(values) - len(parsed)),
        "accuracy": right / len(parsed) if len(parsed) else None, "accuracy_ci": interval,
        "accuracy_unparsed_wrong": right / len(values) if len(values) else None,
    }


# ---------------------------------------------------------------- rubric scores


def rubric_score_array(scores: Sequence[Sequence[Sequence[float | None]]]) -> np.ndarray:
    """(items, runs, rubrics) floats with NaN for an unparsed verdict."""
    return np.array([[[np.nan if s is None else float(s) for s in run] for run in item] for item in scores],
                    dtype=float).reshape(len(scores), -1, len(scores[0][0]) if scores and scores[0] else 0)


def _nanmean_last(array: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (without a warning) where every value is NaN."""
    counts = np.sum(~np.isnan(array), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(array, axis=-1) / np.maximum(counts, 1), np.nan)


def rubric_metrics(scores: Sequence[Sequence[Sequence[float | None]]], sources: Sequence[str],
                   samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Rubric-benchmark metrics from scores[item][run][rubric] (None = unparsed verdict).

    Per item and run: the mean of its parsed rubric scores. Per run: the mean over items. An item's
    score: the mean over runs; the model's score: the mean over items, with a bootstrap interval over
    items; per source the same over that source's items. Across runs: the mean and spread of the run
    scores (how much the judge's sampling moves the number).
    """
    if len(scores) != len(sources):
        raise ValueError(f"{len(scores)} items of scores for {len(sources)} sources")
    array = rubric_score_array(scores)
    item_run = _nanmean_last(array)  # (items, runs)
    per_run = _nanmean_last(item_run.T)  # (runs,)
    item = _nanmean_last(item_run)  # (items,)

    def mean_with_ci(values: np.ndarray, offset: int) -> tuple[float | None, list[float] | None]:
        finite = values[~np.isnan(values)]
        if not len(finite):
            return None, None
        interval = None
        if samples >= 1:
            picks = np.random.default_rng(seed + offset).integers(0, len(values), size=(samples, len(values)))
            interval = percentile_interval(_nanmean_last(values[picks]), level)
        return float(finite.mean()), interval

    score, score_ci = mean_with_ci(item, 0)
    by_source = {}
    for offset, source in enumerate(sorted(set(sources)), start=1):
        mask = np.array([s == source for s in sources])
        value, interval = mean_with_ci(item[mask], offset)
        by_source[source] = {"items": int(mask.sum()), "score": value, "score_ci": interval}
    finite_runs = per_run[~np.isnan(per_run)]
    parsed = int(np.sum(~np.isnan(array)))
    return {
        "items": len(scores), "runs": array.shape[1], "rubrics_per_item": array.shape[2],
        "score": score, "score_ci": score_ci,
        "run_scores": [_none_if_nan(value) for value in per_run],
        "run_mean": float(finite_runs.mean()) if len(finite_runs) else None,
        "run_std": float(finite_runs.std(ddof=1)) if len(finite_runs) > 1 else (0.0 if len(finite_runs) else None),
        "run_range": [float(finite_runs.min()), float(finite_runs.max())] if len(finite_runs) else None,
        "by_source": by_source,
        "item_scores": [_none_if_nan(value) for value in item],
        "items_scored": int(np.sum(~np.isnan(item))),
        "parsed": parsed, "unparsed": int(array.size - parsed),
        "parse_rate": parsed / array.size if array.size else None,
        "bootstrap": {"samples": samples, "seed": seed, "level": level, "resampled": "items"},
    }
