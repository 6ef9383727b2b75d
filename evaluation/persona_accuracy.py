"""Persona accuracy: does a judge, told an inferred persona, pick the response that persona explains?

    python evaluation/persona_accuracy.py --pairs runs/tailoring/test.personas.jsonl --judge-model embedded
    python evaluation/persona_accuracy.py --pairs ... --preferences --saliency      # the two other analyses

Writes the result JSON (accuracy per domain and persona side with 95% bootstrap intervals, unparsed
counted apart and also counted as wrong; with --preferences how often P_C or P_R is the better persona;
with --saliency the most salient words per side) and every judgement with raw texts beside it.
A re-run asks again only about unparsed orders. See docs/tailoring.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, non_negative_int, output_file, positive_int, role_spec,
    sampling_params,
)
from aloe.errors import AloeError
from aloe.judges.pairwise import read_judgements, write_judgements
from aloe.jsonl import write_json
from aloe.models import resolve_spec
from aloe.prompts import prompt_hash
from aloe.provenance import file_hash, provenance
from aloe.runs import RunFiles
from aloe.tailoring.accuracy import (
    accuracy_items, accuracy_judge, accuracy_report, judged_pairs, preference_items, preference_judge,
    preference_report, saliency,
)
from aloe.tailoring.inference import GENERAL
from aloe.tailoring.pairs import SIDES, read_pairs


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, roles=("judge",))
    parser.set_defaults(temperature=0.0, max_new_tokens=128)
    parser.add_argument("--pairs", default=None, help="pairs with personas (infer_personas.py output)")
    parser.add_argument("--domain", default=GENERAL, help="the domain of pairs that name none")
    parser.add_argument("--preferences", action="store_true", help="also judge which of P_C and P_R is the better persona")
    parser.add_argument("--saliency", action="store_true", help="also compute word saliency of the personas")
    parser.add_argument("--min-count", type=positive_int, default=10, help="saliency: personas a word must occur in")
    parser.add_argument("--top", type=positive_int, default=10, help="saliency: words per side")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap samples for the 95%% intervals")
    parser.add_argument("--output", type=output_file, default=None, help="result JSON (default: results/tailoring/<pairs>.accuracy.json)")
    parser.add_argument("--overwrite", action="store_true", help="judge everything again instead of resuming")
    parser.add_argument("--report", default=None, metavar="RESULT", help="print the table of a finished result and stop")
    return parser


def pct(value) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def ci(interval) -> str:
    return "" if interval is None else f" [{interval[0] * 100:.0f}, {interval[1] * 100:.0f}]"


def report_table(result: dict) -> str:
    lines = ["| domain | persona | accuracy % (95% CI) | unparsed | counting unparsed as wrong |", "|---|---|---|---|---|"]
    for domain, sides in result["accuracy"].items():
        for side, m in sides.items():
            lines.append(f"| {domain} | {side} | {pct(m['accuracy'])}{ci(m['accuracy_ci'])} | {m['unparsed']} of "
                         f"{m['items']} | {pct(m['accuracy_unparsed_wrong'])} |")
    return "\n".join(lines)


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.report:
        try:
            result = json.loads(Path(args.report).read_text(encoding="utf-8"))
            print(report_table(result))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AloeError(f"{args.report}: accuracy: not a persona accuracy result ({exc.__class__.__name__})") from None
        return
    if args.pairs is None:
        raise AloeError("--pairs is required (or --report RESULT)")
    started = time.perf_counter()
    judge_spec = role_spec(args, "judge")
    resolve_spec(judge_spec)
    all_pairs = read_pairs(args.pairs)
    pairs = judged_pairs(args.pairs, all_pairs)
    output = Path(args.output or Path("results") / "tailoring" / f"{Path(args.pairs).stem}.accuracy.json")
    run = RunFiles(output, suffix=".json")
    judgements_path = run.beside("judgements.jsonl")
    args.cache = str(run.cache(args.cache))
    params = sampling_params(args)
    judges = {"accuracy": (accuracy_judge(), accuracy_items(pairs))}
    if args.preferences:
        judges["preferences"] = (preference_judge(), preference_items(pairs))
    identity = {"pairs": file_hash(args.pairs), "judge": judge_spec, "params": params.as_dict(),
                "prompts": {judge.prompt: prompt_hash(judge.prompt) for judge, _ in judges.values()}}
    with run.open(overwrite=args.overwrite, also=("judgements.jsonl",)):
        previous = read_judgements(judgements_path, identity)
        model = model_pool(args, output).get(judge_spec)
        judged = {}
        for name, (judge, items) in judges.items():
            before = {item.id: previous[(judge.criterion, item.id)] for item in items
                      if (judge.criterion, item.id) in previous}
            judged[name] = judge.judge(model, items, params, before)
        write_judgements(judgements_path, {judges[name][0].criterion: results for name, results in judged.items()}, identity)

        result = {"pairs": args.pairs, "judge": judge_spec, "with_personas": len(pairs),
                  "without_personas": len(all_pairs) - len(pairs),
                  "accuracy": accuracy_report(pairs, judged["accuracy"], args.domain, args.bootstrap, args.seed)}
        if args.preferences:
            result["preferences"] = preference_report(pairs, judged["preferences"], args.domain, args.bootstrap, args.seed)
        if args.saliency:
            result["saliency"] = saliency({side: [p.persona(side) for p in pairs if p.persona(side)] for side in SIDES},
                                          args.min_count, args.top)
        result["judgements"] = str(judgements_path)
        result["provenance"] = provenance(vars(args), {"judge": model.describe()}, [j.prompt for j, _ in judges.values()])
        write_json(output, result)
    overall = result["accuracy"].get("all", {})
    parts = [f"{side} personas {pct(overall[side]['accuracy'])} ({overall[side]['unparsed']} unparsed; "
             f"{pct(overall[side]['accuracy_unparsed_wrong'])} counting them wrong)" for side in SIDES if side in overall]
    print(f"persona accuracy over {len(pairs)} pairs: {'; '.join(parts) or 'no personas'}; wrote {output} "
          f"and {judgements_path} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
