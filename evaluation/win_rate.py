"""Pairwise win rate of response file B over response file A, judged per criterion in both orders.

    python evaluation/win_rate.py runs/baseline.jsonl runs/tailored.jsonl --judge-model embedded
    python evaluation/win_rate.py base.json pt_dpo.json --judge-model openai:gpt-4o-mini   # authors' files
    python evaluation/win_rate.py --report results/win_rate/*.json                           # one table

Reads our responses JSONL or the persona-tailoring authors' released JSON arrays of
{"response", "prompt"}. Writes the result JSON (per criterion: counts, WR = B/(A+B) with a bootstrap
interval, parse counts; dPQ when personalization and quality were judged) and every judgement with
its raw texts to <output stem>.judgements.jsonl. A re-run asks again only about unparsed orders.
See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, non_negative_int, output_file, role_spec, sampling_params,
)
from aloe.errors import AloeError
from aloe.jsonl import write_json
from aloe.judges.pairwise import (
    PairwiseJudge, PairwiseJudgement, criteria, criterion_prompt, matched_items, needs_condition, read_judgements,
    win_rate_report, write_judgements,
)
from aloe.models import resolve_spec
from aloe.prompts import prompt_hash
from aloe.provenance import file_hash, provenance
from aloe.runs import RunFiles
from aloe.responses import read_responses

DEFAULT_CRITERIA = ("quality", "personalization")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="A.jsonl B.jsonl: the responses to compare (B's win rate over A)")
    add_model_args(parser, roles=("judge",))
    parser.set_defaults(temperature=0.0, max_new_tokens=128)
    parser.add_argument("--criteria", nargs="+", default=list(DEFAULT_CRITERIA),
                        help=f"criteria to judge, each a prompt file pairwise_<criterion>.txt "
                             f"(default: {' '.join(DEFAULT_CRITERIA)}; available: {', '.join(criteria())})")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap samples for the 95%% intervals")
    parser.add_argument("--output", type=output_file, default=None, help="result JSON (default: results/win_rate/<A>_vs_<B>.json)")
    parser.add_argument("--overwrite", action="store_true", help="judge everything again instead of resuming")
    parser.add_argument("--report", nargs="+", default=None, metavar="RESULT",
                        help="print one table of finished result files and stop")
    return parser


def table(results: list[tuple[str, dict]]) -> str:
    def pct(value, signed=False):
        return "n/a" if value is None else (f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}")

    def ci(interval, signed=False):
        return "" if interval is None else f" [{pct(interval[0], signed)}, {pct(interval[1], signed)}]"

    lines = ["| comparison | criterion | A | B | tie | unparsed | WR(B) % | dPQ x100 |", "|---|---|---|---|---|---|---|---|"]
    for name, result in results:
        for criterion, m in result["criteria"].items():
            dpq = pct(result.get("delta_pq"), True) + ci(result.get("delta_pq_ci"), True) if "delta_pq" in result else ""
            lines.append(f"| {name} | {criterion} | {m['a']} | {m['b']} | {m['tie']} | {m['unparsed']} | "
                         f"{pct(m['win_rate'])}{ci(m['win_rate_ci'])} | {dpq} |")
    return "\n".join(lines)


def read_result(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AloeError(f"{path}: cannot read a win-rate result ({exc})") from None
    if not isinstance(data, dict) or "criteria" not in data:
        raise AloeError(f"{path}: criteria: missing (not a win-rate result file)")
    try:  # a result cut short or edited by hand fails here, named
        table([(path, data)])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise AloeError(f"{path}: an incomplete win-rate result ({type(exc).__name__}: {exc})") from None
    return data


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.report:
        print(table([(Path(path).stem, read_result(path)) for path in args.report]))
        return
    if len(args.files) != 2:
        raise AloeError(f"expected two response files A and B, got {len(args.files)}")
    started = time.perf_counter()
    prompts = [criterion_prompt(criterion) for criterion in args.criteria]
    judge_spec = role_spec(args, "judge")
    resolve_spec(judge_spec)
    path_a, path_b = args.files
    items = matched_items(path_a, read_responses(path_a), path_b, read_responses(path_b))
    output = Path(args.output or Path("results") / "win_rate" / f"{Path(path_a).stem}_vs_{Path(path_b).stem}.json")
    for criterion in args.criteria:
        missing = next((item for item in items
                        if needs_condition(criterion) and not (item.context["condition"] or "").strip()), None)
        if missing is not None:
            raise AloeError(f"{path_b}: record {missing.id}: condition: empty in both files, and the {criterion} "
                            "criterion shows the judge the persona or system message the tested model was given")
    run = RunFiles(output, suffix=".json")
    judgements_path = run.beside("judgements.jsonl")
    args.cache = str(run.cache(args.cache))
    params = sampling_params(args)
    identity = {"a": file_hash(path_a), "b": file_hash(path_b), "judge": judge_spec, "params": params.as_dict(),
                "prompts": {name: prompt_hash(name) for name in prompts}}
    with run.open(overwrite=args.overwrite, also=("judgements.jsonl",)):
        previous = read_judgements(judgements_path, identity)

        pool = model_pool(args, output)
        judge = pool.get(judge_spec)
        judged: dict[str, list[PairwiseJudgement]] = {}
        for criterion in args.criteria:
            pairwise = PairwiseJudge(criterion)
            before = {item.id: previous[(criterion, item.id)] for item in items if (criterion, item.id) in previous}
            judged[criterion] = pairwise.judge(judge, items, params, before)
        write_judgements(judgements_path, judged, identity)
        report = win_rate_report(judged, args.bootstrap, args.seed)
        settings = {key: value for key, value in vars(args).items() if key != "report"}
        write_json(output, {"a": path_a, "b": path_b, "judge": judge_spec, "items": len(items), **report,
                            "judgements": str(judgements_path),
                            "provenance": provenance(settings, {"judge": judge.describe()}, prompts)})

    def num(value):
        return "n/a" if value is None else f"{value:.3f}"

    parts = [f"{criterion} WR(B) {num(report['criteria'][criterion]['win_rate'])}" for criterion in args.criteria]
    if "delta_pq" in report:
        parts.append(f"dPQ {num(report['delta_pq'])}")
    unparsed = sum(m["unparsed"] for m in report["criteria"].values())
    print(f"{Path(path_b).name} vs {Path(path_a).name}: {len(items)} items; {'; '.join(parts)}; "
          f"{unparsed} unparsed; wrote {output} and {judgements_path} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
