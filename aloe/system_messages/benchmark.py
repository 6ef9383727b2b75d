"""The Multifaceted benchmark: responses under unseen system messages, graded by rubrics.

For every item the model under test answers the prompt with the item's system message in the system
role (the generic response generator). The rubric judge then grades each response against each of the
item's four rubrics, one call per rubric, every item and rubric of a run in one batch; `runs` judge
runs use sample indices 0..runs-1 (they differ only when the judge samples). A verdict that does not
parse is asked once more with a reminder, as one smaller batch, and otherwise stays None with its
reason. Whether the judge sees the system message is a setting recorded in the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from aloe.judges import JudgeAttempt, JudgedScore, rubric
from aloe.lockstep import generate_some
from aloe.metrics import rubric_metrics
from aloe.models.base import ChatModel, SamplingParams
from aloe.plots import pyplot, save_figure
from aloe.progress import Progress
from aloe.records import Record
from aloe.responses import ResponseRequest, condition_messages
from aloe.system_messages.records import BenchItem

PROMPTS = rubric.PROMPTS


RubricJudgement = JudgedScore  # one rubric's grade in one judge run
class BenchRecord(Record):
    """One item's response and its grades: judgements[run][rubric]. A response record too (the condition is
    the system message), so win_rate.py compares two models' records files directly."""

    id: str
    source: str
    prompt: str
    condition: str  # the item's system message
    response: str
    finish_reason: str = "stop"
    flags: list[str] = Field(default_factory=list)
    judgements: list[list[RubricJudgement]]

    def scores(self) -> list[list[int | None]]:
        return [[judgement.score for judgement in run] for run in self.judgements]


def response_requests(items: Sequence[BenchItem]) -> list[ResponseRequest]:
    """Each item's prompt with its system message in the system role."""
    return [ResponseRequest(id=item.id, prompt=item.prompt, condition=item.system,
                            messages=condition_messages(item.prompt, item.system, "system")) for item in items]


def judge_responses(judge: ChatModel, items: Sequence[BenchItem], responses: Sequence[str], params: SamplingParams,
                    runs: int = 1, sees_system: bool = False) -> list[list[list[RubricJudgement]]]:
    """judgements[item][run][rubric]: one batch of every (run, item, rubric), then one batch of reminders.

    A request that failed after its retries leaves its grade None with the reason (counted unparsed)."""
    asks = [(i, run, k, rubric.judge_messages(item.prompt, responses[i], item.reference_answer, r.criteria,
                                               r.score_descriptions, item.system if sees_system else None))
            for run in range(runs) for i, item in enumerate(items) for k, r in enumerate(item.rubrics)]
    results = [[[RubricJudgement() for _ in item.rubrics] for _ in range(runs)] for item in items]
    with Progress(len(asks), "judging", "asks", enabled=bool(asks)) as progress:
        replies, failures = generate_some(judge, [messages for *_, messages in asks], params,
                                          [run for _, run, _, _ in asks], progress)
    retry = []
    for position, (ask, reply) in enumerate(zip(asks, replies)):
        if reply is None:
            i, run, k, _ = ask
            results[i][run][k].reason = failures[position]
            continue
        verdict = rubric.parse_rubric_score(reply.text)
        _add(results, ask, verdict)
        if not verdict.parsed:
            retry.append((ask, rubric.reminder_messages(ask[3], verdict)))
    replies, failures = generate_some(judge, [messages for _, messages in retry], params, [ask[1] for ask, _ in retry])
    for (ask, _), reply in zip(retry, replies):
        if reply is not None:  # else the first ask's unparsed verdict stands
            _add(results, ask, rubric.parse_rubric_score(reply.text))
    return results


def _add(results, ask, verdict) -> None:
    i, run, k, _ = ask
    judgement = results[i][run][k]
    judgement.attempts.append(JudgeAttempt(raw=verdict.raw, score=verdict.value, reason=verdict.reason))
    judgement.score = verdict.value
    judgement.reason = None if verdict.parsed else f"{verdict.reason} (after {len(judgement.attempts)} asks)"


def metrics(records: Sequence[BenchRecord], samples: int = 1000, seed: int = 0) -> dict:
    return rubric_metrics([record.scores() for record in records], [record.source for record in records],
                          samples, seed)


# ---------------------------------------------------------------- comparing results


def _with_ci(value, interval) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def results_table(results: Sequence[dict]) -> str:
    """Several models' results as Markdown: score with its interval, spread over runs, per-source scores."""
    sources = sorted({source for result in results for source in result["metrics"]["by_source"]})
    columns = ["model", "items", "runs", "score", "run spread (sd)", *sources, "parse rate"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for result in results:
        m = result["metrics"]
        per_source = [m["by_source"].get(source, {}).get("score") for source in sources]
        cells = [result["name"], str(m["items"]), str(m["runs"]), _with_ci(m["score"], m["score_ci"]),
                 "n/a" if m["run_std"] is None else f"{m['run_std']:.2f}",
                 *("n/a" if value is None else f"{value:.2f}" for value in per_source),
                 "n/a" if m["parse_rate"] is None else f"{m['parse_rate']:.0%} ({m['parsed']}/{m['parsed'] + m['unparsed']})"]
        lines.append("| " + " | ".join(cells) + " |")
    judges = sorted({f"judge {r['models']['judge']}, sees system message: {r['judge_sees_system']}" for r in results})
    note = (f"Judge: {judges[0]}." if len(judges) == 1 else
            f"Warning: the results used different judges or judge settings ({'; '.join(judges)}), so they do not compare.")
    return "\n".join(lines) + "\n\n" + note + "\nScores 1-5: mean over items of the mean of 4 rubric scores; " \
        "brackets: 95% bootstrap intervals over items.\n"


def plot_results(results: Sequence[dict], path) -> None:
    """Grouped bars: the overall score and each source's, one bar per model, with the overall interval."""
    plt = pyplot()
    sources = sorted({source for result in results for source in result["metrics"]["by_source"]})
    groups = ["overall", *sources]
    figure, axes = plt.subplots(figsize=(1.2 + 1.1 * len(groups) * max(1, len(results)) / 2, 3.6))
    width = 0.8 / max(1, len(results))
    for n, result in enumerate(results):
        m = result["metrics"]
        values = [m["score"], *(m["by_source"].get(source, {}).get("score") for source in sources)]
        xs = [g + n * width for g in range(len(groups))]
        axes.bar(xs, [v or 0 for v in values], width, label=result["name"])
        if m["score"] is not None and m["score_ci"]:
            axes.errorbar(xs[0], m["score"], yerr=[[m["score"] - m["score_ci"][0]], [m["score_ci"][1] - m["score"]]],
                          color="black", capsize=3)
    axes.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=30, ha="right")
    axes.set_ylim(0, 5)
    axes.set_ylabel("rubric score (1-5)")
    axes.set_title("Multifaceted benchmark")
    axes.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
