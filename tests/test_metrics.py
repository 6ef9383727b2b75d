"""ALOE metrics against values computed by hand."""

import math

import numpy as np
import pytest

from aloe.metrics import (
    alignment_levels, alignment_metrics, bootstrap, improvement_rate, normalized_improvement_rate, normalized_levels,
    parse_counts,
)


def test_linear_rise_gives_slope_one_and_n_ir_one_over_k_minus_one():
    scores = [[1, 2, 3], [3, 4, 5]]
    metrics = alignment_metrics(scores, turns=3, samples=200)
    assert metrics["al"] == [2.0, 3.0, 4.0]
    assert metrics["ir"] == pytest.approx(1.0)
    assert metrics["r2"] == pytest.approx(1.0)
    assert metrics["n_al"] == [0.0, 0.5, 1.0]
    assert metrics["n_ir"] == pytest.approx(1 / (3 - 1))
    assert metrics["mean_al"] == pytest.approx(3.0)


@pytest.mark.parametrize("turns", [2, 5, 10])
def test_any_perfectly_linear_curve_has_n_ir_one_over_k_minus_one(turns):
    levels = [1.5 + 0.3 * k for k in range(turns)]
    assert normalized_improvement_rate(levels) == pytest.approx(1 / (turns - 1))
    falling = list(reversed(levels))
    assert normalized_improvement_rate(falling) == pytest.approx(-1 / (turns - 1))


def test_flat_curve_has_zero_rates_and_no_r2():
    metrics = alignment_metrics([[3, 3, 3], [3, 3, 3]], turns=3, samples=100)
    assert metrics["ir"] == 0.0
    assert metrics["n_ir"] == 0.0
    assert metrics["n_al"] == [0.0, 0.0, 0.0]
    assert metrics["r2"] is None  # nothing to explain: R^2 is undefined, not 1 or 0
    assert metrics["ir_ci"] == [0.0, 0.0]
    assert metrics["n_ir_ci"] == [0.0, 0.0]


def test_missing_and_unparsed_scores_are_left_out_of_each_turns_mean():
    # conversation 1: unparsed at turn 2; conversation 2: stopped after turn 2
    scores = [[5, None, 1], [3, 4], [1, 2, 3]]
    assert alignment_levels(scores, 3) == [3.0, 3.0, 2.0]
    assert parse_counts(scores, 3) == [
        {"parsed": 3, "unparsed": 0, "missing": 0},
        {"parsed": 2, "unparsed": 1, "missing": 0},
        {"parsed": 2, "unparsed": 0, "missing": 1},
    ]
    # y = 3, 3, 2 on k = 1, 2, 3: slope -1/2, R^2 = 1 / (2 * 2/3) = 0.75
    ir, r2 = improvement_rate([3.0, 3.0, 2.0])
    assert ir == pytest.approx(-0.5)
    assert r2 == pytest.approx(0.75)
    metrics = alignment_metrics(scores, 3, samples=100)
    assert metrics["n_al"] == [1.0, 1.0, 0.0]
    assert metrics["n_ir"] == pytest.approx(-0.5)  # range 1, so the same slope
    assert (metrics["parsed"], metrics["unparsed"], metrics["missing"]) == (7, 1, 1)
    assert metrics["parse_rate"] == pytest.approx(7 / 8)
    assert metrics["mean_al"] == pytest.approx(8 / 3)


def test_a_turn_without_any_parsed_score_is_skipped_by_the_fit():
    levels = alignment_levels([[None, 4, 5], [None, 4, 5]], 3)
    assert levels == [None, 4.0, 5.0]
    assert improvement_rate(levels) == (pytest.approx(1.0), pytest.approx(1.0))  # two points always fit a line
    assert normalized_levels(levels) == [None, 0.0, 1.0]
    assert normalized_improvement_rate(levels) == pytest.approx(1.0)


def test_n_ir_is_ir_over_the_range_and_shares_its_r2():
    rng = np.random.default_rng(3)
    scores = rng.integers(1, 6, size=(40, 6)).tolist()
    metrics = alignment_metrics(scores, 6, samples=50)
    levels = metrics["al"]
    assert metrics["n_ir"] == pytest.approx(metrics["ir"] / (max(levels) - min(levels)))
    _, n_r2 = improvement_rate(metrics["n_al"])
    assert n_r2 == pytest.approx(metrics["r2"])
    k = np.arange(1, 7)
    slope, _ = np.polyfit(k, levels, 1)
    assert metrics["ir"] == pytest.approx(slope)


def test_single_turn_has_no_slope():
    metrics = alignment_metrics([[4], [2]], 1, samples=20)
    assert metrics["al"] == [3.0]
    assert metrics["ir"] is None and metrics["n_ir"] is None


def test_bootstrap_intervals_cover_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(0)
    scores = rng.integers(1, 6, size=(30, 4)).tolist()
    metrics = alignment_metrics(scores, 4, samples=500, seed=7)
    for row in metrics["per_turn"]:
        low, high = row["al_ci"]
        assert low <= row["al"] <= high and high - low > 0
    low, high = metrics["ir_ci"]
    assert low <= metrics["ir"] <= high
    assert metrics["mean_al_ci"][0] <= metrics["mean_al"] <= metrics["mean_al_ci"][1]
    assert alignment_metrics(scores, 4, samples=500, seed=7)["ir_ci"] == metrics["ir_ci"]
    assert alignment_metrics(scores, 4, samples=500, seed=8)["ir_ci"] != metrics["ir_ci"]


def test_identical_conversations_give_zero_width_intervals():
    intervals = bootstrap([[2, 4]] * 5, 2, samples=100)
    assert intervals["al"] == [[2.0, 2.0], [4.0, 4.0]]
    assert intervals["ir"] == [2.0, 2.0]


def test_all_unparsed_gives_no_numbers_and_a_zero_parse_rate():
    metrics = alignment_metrics([[None, None], [None]], 2, samples=50)
    assert metrics["al"] == [None, None]
    assert metrics["ir"] is None and metrics["n_ir"] is None and metrics["mean_al"] is None
    assert metrics["parse_rate"] == 0.0
    assert metrics["per_turn"][0]["al_ci"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in metrics.values())


def test_too_many_scores_for_the_turns_is_a_bug_not_data():
    with pytest.raises(ValueError):
        alignment_metrics([[1, 2, 3]], 2)
