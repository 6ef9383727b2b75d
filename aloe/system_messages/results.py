"""Multifaceted benchmark results: the schema of `results/multifaceted/<name>.json`, its one reader, the
writer, the comparison table and the bar plot.

The metrics are typed (not a free dict) so that a file cut short or written by something else is one
error line naming the missing field when it is read, never a KeyError in the middle of a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from aloe.jsonl import read_json_as, write_json
from aloe.logs import RedactedSettings
from aloe.records import Record


class SourceScore(BaseModel):
    items: int
    score: float | None
    score_ci: list[float] | None


class RubricMetrics(BaseModel):
    """`aloe.metrics.rubric_metrics`: scores 1-5 over items, runs and rubrics (docs/system_messages.md)."""

    items: int
    runs: int
    rubrics_per_item: int
    score: float | None  # mean over items of each item's mean over runs of its mean parsed rubric score
    score_ci: list[float] | None  # 95% bootstrap interval over items
    run_scores: list[float | None]
    run_mean: float | None
    run_std: float | None
    run_range: list[float] | None
    by_source: dict[str, SourceScore]
    item_scores: list[float | None]
    items_scored: int
    parsed: int
    unparsed: int
    parse_rate: float | None
    bootstrap: dict[str, Any]


class MultifacetedResult(Record):
    """One Multifaceted benchmark result (`evaluation/eval_multifaceted.py`)."""

    benchmark: Literal["multifaceted"] = "multifaceted"  # the kind of result file: tells it from an ALOE result
    name: str
    model: str  # the model spec, or the --responses file graded
    models: dict[str, str]  # role (model, judge) -> spec
    judge_sees_system: bool
    judge_temperature: float
    runs: int
    bench: str
    settings: RedactedSettings  # every flag of the run (credentials in URLs redacted)
    records: str  # the per-item records file
    plot: str
    metrics: RubricMetrics
    provenance: dict[str, Any] = {}


def read_result(path: str | Path) -> MultifacetedResult:
    """The one reader of Multifaceted result files; anything else is one AloeError naming the file and field."""
    return read_json_as(path, MultifacetedResult,
                        "a Multifaceted result; expected the JSON written by evaluation/eval_multifaceted.py")


def write_result(path: Path, result: MultifacetedResult) -> None:
    """The result JSON and its plot (atomically: a reader never sees half a file)."""
    write_json(path, result.model_dump(mode="json"))
    plot_results([result], result.plot)


def _score(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def results_table(results: Sequence[MultifacetedResult]) -> str:
    """Several models' results as Markdown: score with its interval, spread over runs, per-source scores."""
    sources = sorted({source for result in results for source in result.metrics.by_source})
    columns = ["model", "items", "runs", "score", "run spread (sd)", *sources, "parse rate"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for result in results:
        m = result.metrics
        per_source = [m.by_source[source].score if source in m.by_source else None for source in sources]
        cells = [result.name, str(m.items), str(m.runs), _score(m.score, m.score_ci), _score(m.run_std),
                 *(_score(value) for value in per_source),
                 "n/a" if m.parse_rate is None else f"{m.parse_rate:.0%} ({m.parsed}/{m.parsed + m.unparsed})"]
        lines.append("| " + " | ".join(cells) + " |")
    judges = sorted({f"judge {r.models['judge']}, sees system message: {r.judge_sees_system}" for r in results})
    note = (f"Judge: {judges[0]}." if len(judges) == 1 else
            f"Warning: the results used different judges or judge settings ({'; '.join(judges)}), so they do not compare.")
    return "\n".join(lines) + "\n\n" + note + "\nScores 1-5: mean over items of the mean of 4 rubric scores; " \
        "brackets: 95% bootstrap intervals over items.\n"


def plot_results(results: Sequence[MultifacetedResult], path: str | Path) -> None:
    """Grouped bars: the overall score and each source's, one bar per model, with the overall interval."""
    from aloe.plots import pyplot, save_figure

    plt = pyplot()
    sources = sorted({source for result in results for source in result.metrics.by_source})
    groups = ["overall", *sources]
    figure, axes = plt.subplots(figsize=(1.2 + 1.1 * len(groups) * max(1, len(results)) / 2, 3.6))
    width = 0.8 / max(1, len(results))
    for n, result in enumerate(results):
        m = result.metrics
        values = [m.score, *(m.by_source[source].score if source in m.by_source else None for source in sources)]
        xs = [g + n * width for g in range(len(groups))]
        axes.bar(xs, [v or 0 for v in values], width, label=result.name)
        if m.score is not None and m.score_ci:
            axes.errorbar(xs[0], m.score, yerr=[[m.score - m.score_ci[0]], [m.score_ci[1] - m.score]],
                          color="black", capsize=3)
    axes.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=30, ha="right")
    axes.set_ylim(0, 5)
    axes.set_ylabel("rubric score (1-5)")
    axes.set_title("Multifaceted benchmark")
    axes.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
