"""Evaluate a model on the Multifaceted benchmark: responses under unseen system messages, graded by rubrics.

    python evaluation/eval_multifaceted.py --model embedded --judge-model embedded --limit 10 --runs 3
    python evaluation/eval_multifaceted.py --model model_output/embedded_dpo --judge-model openai:gpt-4-turbo \
        --judge-temperature 1.0 --runs 3 --max-new-tokens 1024     # the paper's protocol (with the released bench)
    python evaluation/eval_multifaceted.py --responses runs/sysmsg/best_of_4.jsonl --name best_of_4 ...

Responses come from the generic response generator (the item's system message in the system role),
or from --responses (any file of responses keyed by the benchmark's ids, such as best_of_n.py's).
Writes results/multifaceted/<name>.json (settings, provenance, metrics: score with a bootstrap interval
over items, per-run scores and their spread, per-source scores, parse counts), the per-item records
to <name>.records.jsonl and a plot to <name>.png, and prints a table. See docs/system_messages.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, non_negative_float, non_negative_int, output_file,
    positive_int, role_spec, sampling_params,
)
from aloe.errors import AloeError
from aloe.jsonl import rewrite_jsonl
from aloe.models import resolve_spec, short_name
from aloe.provenance import provenance
from aloe.responses import generate_responses, read_responses
from aloe.system_messages.benchmark import PROMPTS, BenchRecord, judge_responses, metrics, response_requests
from aloe.system_messages.data import BENCH, RELEASED_BENCH, read_bench
from aloe.system_messages.results import MultifacetedResult, results_table, write_result

DEFAULT_JUDGE = "embedded"  # the paper used GPT-4-Turbo; the judge is part of the benchmark, not the model


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, roles=("judge",))
    # The paper's generation settings for open models (its repetition penalty of 1.03 has no API equivalent).
    parser.set_defaults(temperature=1.0, top_p=0.9, max_new_tokens=1024)
    group = parser.add_argument_group("benchmark")
    group.add_argument("--bench", default=str(BENCH),
                       help=f"benchmark items JSONL (default: the shipped 31 items), or {RELEASED_BENCH} for the "
                            "released 921 items when the hub is reachable")
    group.add_argument("--limit", type=positive_int, default=None, help="only the first N items")
    group.add_argument("--responses", default=None,
                       help="grade these responses (ids = benchmark ids) instead of generating with --model")
    group.add_argument("--runs", type=positive_int, default=3, help="judge runs (paper: 3); they differ only "
                       "when the judge samples (--judge-temperature > 0)")
    group.add_argument("--judge-temperature", type=non_negative_float, default=0.0,
                       help="judge temperature (default: greedy; the paper sampled at 1.0)")
    group.add_argument("--judge-max-new-tokens", type=positive_int, default=256)
    group.add_argument("--judge-sees-system", action="store_true",
                       help="show the judge the item's system message too (default: instruction, response, "
                            "reference answer and rubric only, as the paper's shipped evaluation did)")
    group.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap samples for the 95%% intervals")
    group.add_argument("--name", default=None, help="result name (default: the model's short name)")
    group.add_argument("--output", type=output_file, default=None, help="result JSON (default: results/multifaceted/<name>.json)")
    group.add_argument("--group-size", type=positive_int, default=64, help="prompts per backend call")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    args.judge_model = args.judge_model or DEFAULT_JUDGE
    for spec in (args.model, args.judge_model):
        resolve_spec(spec)
    items = read_bench(args.bench)[:args.limit]
    name = args.name or (Path(args.responses).stem if args.responses else short_name(args.model))
    output = Path(args.output or Path("results") / "multifaceted" / f"{name}.json")
    if output.is_dir():
        raise AloeError(f"{output}: is a directory; --output must be a JSON file path")
    given = {response.id: response for response in read_responses(args.responses)} if args.responses else {}
    pool = model_pool(args, output)
    if args.responses:
        missing = [item.id for item in items if item.id not in given]
        if missing:
            raise AloeError(f"{args.responses}: id: no response for benchmark item {missing[0]!r} "
                            f"({len(missing)} of {len(items)} missing)")
        responses = [given[item.id] for item in items]
        answering = {"responses": args.responses}
    else:
        responses = []
        model = pool.get(args.model)
        generate_responses(model, response_requests(items), sampling_params(args), responses.append, args.group_size)
        answering = model.describe()
    judge = pool.get(role_spec(args, "judge"))
    judge_params = sampling_params(args, temperature=args.judge_temperature, max_new_tokens=args.judge_max_new_tokens)
    judgements = judge_responses(judge, items, [r.response for r in responses], judge_params, args.runs,
                                 args.judge_sees_system)
    records = [BenchRecord(id=item.id, source=item.source, prompt=item.prompt, condition=item.system,
                           response=response.response, finish_reason=response.finish_reason, flags=response.flags,
                           judgements=judged)
               for item, response, judged in zip(items, responses, judgements)]
    stem = output.with_suffix("")
    paths = {"records": Path(f"{stem}.records.jsonl"), "plot": Path(f"{stem}.png")}
    rewrite_jsonl(paths["records"], records)
    settings = dict(vars(args))  # redacted by the result schema (RedactedSettings)
    result = MultifacetedResult(
        name=name, model=args.responses or args.model,
        models={"model": args.responses or args.model, "judge": args.judge_model},
        judge_sees_system=args.judge_sees_system, judge_temperature=args.judge_temperature,
        runs=args.runs, bench=args.bench, settings=settings,
        records=str(paths["records"]), plot=str(paths["plot"]),
        metrics=metrics(records, args.bootstrap, args.seed),
        provenance=provenance(settings, {"model": answering, "judge": judge.describe()}, list(PROMPTS)),
    )
    write_result(output, result)
    m = result.metrics
    print(results_table([result]), end="")
    print(f"{name}: {m.items} items x {m.runs} runs; score {'n/a' if m.score is None else format(m.score, '.2f')}; "
          f"{m.parsed} verdicts parsed, {m.unparsed} unparsed; wrote {output}, {paths['records']} and {paths['plot']} "
          f"in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
