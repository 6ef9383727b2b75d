"""Compare ALOE results (one table, one plot of every model's AL(k) curve) or Multifaceted results
(one table of scores with per-source columns, one bar plot).

    python evaluation/report.py results/aloe/embedded.json results/aloe/embedded_dpo.json
    python evaluation/report.py results/aloe/*.json --output results/aloe/report.md   # + report.png

The table is printed and written to --output (default results/aloe/report.md); the plot goes beside
it with the same name and .png. See docs/evaluation.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from pydantic import Field, TypeAdapter

from aloe.cli import ArgumentParser, cli_main, output_file
from aloe.errors import AloeError
from aloe.interaction.results import AloeResult, plot_levels
from aloe.jsonl import read_json_as
from aloe.system_messages.results import MultifacetedResult, plot_results, results_table

COLUMNS = ("model", "conversations", "turns", "AL(1)", "AL(K)", "mean AL", "IR", "N-IR", "R²", "parse rate",
           "cut at cap (replies / user)")

# Either result kind, told apart by the `benchmark` field each file carries.
RESULT = TypeAdapter(Annotated[AloeResult | MultifacetedResult, Field(discriminator="benchmark")])


def load_result(path: str | Path) -> AloeResult | MultifacetedResult:
    """An ALOE or a Multifaceted result, by its `benchmark` field; anything else is one error line."""
    result = read_json_as(path, RESULT, "an ALOE result nor a Multifaceted one; expected the JSON written by "
                                        "evaluation/eval_aloe.py or evaluation/eval_multifaceted.py")
    try:  # a result edited by hand can pass the schema and still miss a metric; named before anything is written
        (table if isinstance(result, AloeResult) else results_table)([result])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise AloeError(f"{path}: an incomplete result ({type(exc).__name__}: {exc}); re-run the evaluation "
                        "that wrote it") from None
    return result


def _num(value, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _with_ci(value, interval, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "n/a"
    if not interval:
        return _num(value, fmt)
    return f"{_num(value, fmt)} [{_num(interval[0], fmt)}, {_num(interval[1], fmt)}]"


def table(results: list[AloeResult]) -> str:
    """The comparison as Markdown; values carry their 95% bootstrap intervals in brackets."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for result in results:
        m = result.metrics
        first, last = m["per_turn"][0], m["per_turn"][-1]
        rate = m["parse_rate"]
        cells = [
            result.name, str(m["conversations"]), str(m["turns"]),
            _with_ci(first["al"], first["al_ci"]), _with_ci(last["al"], last["al_ci"]),
            _with_ci(m["mean_al"], m["mean_al_ci"]), _with_ci(m["ir"], m["ir_ci"], "{:+.3f}"),
            _with_ci(m["n_ir"], m["n_ir_ci"], "{:+.3f}"), _num(m["r2"]),
            "n/a" if rate is None else f"{rate:.0%} ({m['parsed']}/{m['parsed'] + m['unparsed']})",
            f"{_num(result.truncated.get('model'), '{:.0%}')} / {_num(result.truncated.get('user'), '{:.0%}')}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    judges = sorted({f"user {r.models['user']}, judge {r.models['judge']}" for r in results})
    notes = [f"Simulator and judge: {'; '.join(judges)}." if len(judges) == 1 else
             f"Warning: the results used different simulators or judges ({'; '.join(judges)}), so they do not compare."]
    persona_sets = sorted({(r.persona_set or {}).get("name", "unrecorded") for r in results})
    notes.append(f"Persona set: {'; '.join(persona_sets)}.")
    differing = protocol_differences(results)
    if differing:
        notes.append(f"Warning: the results differ in {differing}, so their numbers do not compare.")
    notes.append("Brackets: 95% bootstrap intervals over conversations. IR and N-IR are per turn. Cut at cap: "
                 "share of the model's replies and of the simulated user's messages that hit their token cap "
                 "(per turn in each result's `truncated`).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


# What must match for two ALOE results to compare: everything in the run identity but the model under
# test and its own dtype (the simulator and judge are named in the line above).
NOT_PROTOCOL = {"model", "user_model", "judge_model", "dtype", "seed", "model_weights"}


def protocol_differences(results: list[AloeResult]) -> str:
    """The identity settings (turns, personas, prompt hashes, caps, temperatures, ...) that differ across results."""
    keys = sorted({key for result in results for key in result.identity} - NOT_PROTOCOL)
    differing = []
    for key in keys:
        values = [result.identity.get(key) for result in results]
        if any(value != values[0] for value in values[1:]):
            shown = ", ".join(f"{result.name}: {_short(value)}" for result, value in zip(results, values))
            differing.append(f"{key} ({shown})")
    return "; ".join(differing)


def _short(value) -> str:
    if isinstance(value, dict):  # prompt hashes: name only the prompts that differ is enough for a warning
        return "{...}"
    return "unset" if value is None else str(value)


@cli_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+",
                        help="result JSON files written by evaluation/eval_aloe.py or evaluation/eval_multifaceted.py")
    parser.add_argument("--output", type=output_file, default="results/aloe/report.md",
                        help="Markdown table path; the plot is written beside it as .png")
    args = parser.parse_args(argv)
    results = [load_result(path) for path in args.results]
    kinds = {result.benchmark for result in results}
    if len(kinds) > 1:
        raise AloeError(f"{', '.join(args.results)}: results of different benchmarks ({', '.join(sorted(kinds))}) "
                        "do not go in one table")
    names = [result.name for result in results]
    if len(set(names)) != len(names):
        # Same stem from different folders (e.g. shards of two runs): tell them apart by path.
        for result, path in zip(results, args.results):
            result.name = str(Path(path).with_suffix(""))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    plot = output.with_suffix(".png")
    if kinds == {"multifaceted"}:
        markdown = results_table(results)
        plot_results(results, plot)
    else:
        markdown = table(results)
        plot = plot_levels([(result.name, result.metrics) for result in results], plot)
    output.write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {output} and {plot}")


if __name__ == "__main__":
    sys.exit(main())
