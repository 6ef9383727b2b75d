"""Responses of a model for prompts under a condition (a persona, a system message, or none).

    python evaluation/generate_responses.py --model embedded --prompts prompts.jsonl --condition-field system
    python evaluation/generate_responses.py --model embedded --prompts prompts.jsonl --placement none
    python evaluation/generate_responses.py --model model_output/pt_dpo --pairs test.personas.jsonl \
        --persona retr-chosen --train-pairs train.personas.jsonl                 # persona tailoring
    python evaluation/generate_responses.py --model hf:meta-llama/Llama-3.1-8B --raw-text --pairs test.personas.jsonl \
        --persona retr-chosen --train-pairs train.personas.jsonl --few-shot 5     # an untrained base model

Each output record keeps prompt, condition and response as separate fields, with the finish reason
and flags for degenerate outputs (truncated, empty, repeated_ngram, prefix_reattached); nothing is
dropped. Requests go through the backend in batches with the response cache; a re-run skips the ids
already written. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, add_raw_text_arg, add_run_args, cli_main, model_pool, positive_int, sampling_params,
    take_shard,
)
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, existing_ids, write_json
from aloe.models import resolve_spec, short_name
from aloe.runs import RunFiles
from aloe.provenance import provenance
from aloe.responses import AFTER_PROMPT, PLACEMENTS, generate_responses, prompt_requests
from aloe.tailoring.generation import FEW_SHOT_PROMPTS, FEW_SHOT_STOP, PERSONA_TYPES, FewShot, persona_requests
from aloe.tailoring.inference import GENERAL
from aloe.tailoring.pairs import read_pairs


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    add_raw_text_arg(parser)
    parser.set_defaults(temperature=0.0, max_new_tokens=256)
    source = parser.add_argument_group("prompts")
    source.add_argument("--prompts", default=None, help="JSONL of records with id and prompt")
    source.add_argument("--condition-field", default=None,
                        help="the field of each record that holds its condition (default: no condition)")
    source.add_argument("--placement", choices=PLACEMENTS, default="system",
                        help="where the condition goes: a system message, a paragraph after the prompt, or nowhere")
    tailoring = parser.add_argument_group("persona tailoring (instead of --prompts)")
    tailoring.add_argument("--pairs", default=None, help="test preference pairs (with personas for gold-* types)")
    tailoring.add_argument("--persona", choices=PERSONA_TYPES, default="none", help="which persona each prompt gets")
    tailoring.add_argument("--train-pairs", default=None,
                           help="training pairs with personas: the pool for retr-* and system personas")
    tailoring.add_argument("--system-persona", default=None, help="the one persona of --persona system")
    tailoring.add_argument("--embedder", default="embedded", help="sentence embedder for retrieval")
    tailoring.add_argument("--domain", default=GENERAL, help="the domain of pairs that name none")
    tailoring.add_argument("--few-shot", type=positive_int, default=None, metavar="N",
                           help="untrained base models: N exemplars (prompt, chosen persona, chosen response) before "
                                "each item in the raw Prompt:/Persona:/Response: layout, stopped at the next Prompt:")
    tailoring.add_argument("--few-shot-pairs", default=None,
                           help="pairs the exemplars come from (default: --train-pairs)")
    tailoring.add_argument("--few-shot-seed", type=int, default=0, help="seed of the exemplars' fixed order")
    source.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts")
    add_run_args(parser, "prompt", output_help="responses JSONL (default: runs/responses/<model>.jsonl)", group_size=64,
                 group_help="prompts per backend call")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    resolve_spec(args.model)
    if (args.prompts is None) == (args.pairs is None):
        raise AloeError("give exactly one of --prompts FILE or --pairs FILE")
    few_shot_path = args.few_shot_pairs or args.train_pairs
    if args.few_shot and not (args.pairs and few_shot_path):
        raise AloeError("--few-shot needs --pairs and pairs to draw exemplars from (--train-pairs or --few-shot-pairs)")
    if args.prompts:
        requests = prompt_requests(args.prompts, args.condition_field, args.placement)
    else:
        pairs = read_pairs(args.pairs)[:args.limit]
        few_shot = (FewShot(read_pairs(few_shot_path), str(few_shot_path), args.few_shot, args.few_shot_seed)
                    if args.few_shot else None)
        requests = persona_requests(args.pairs, pairs, args.persona, args.placement, args.domain,
                                    args.train_pairs, args.system_persona, args.embedder, few_shot)
    requests = take_shard(requests[:args.limit], args.shard)
    name = short_name(args.model) + (f".{args.persona}" if args.pairs else "") + (".fewshot" if args.few_shot else "")
    run = RunFiles(args.output or Path("runs") / "responses" / f"{name}.jsonl", args.shard)
    output = run.main
    args.cache = str(run.cache(args.cache))
    flagged = 0
    failed = []
    with run.open(overwrite=args.overwrite):
        done = existing_ids(output)
        pending = [request for request in requests if request.id not in done]
        with JsonlWriter(output) as writer, run.failure_log() as log_failure:
            def write(response):
                nonlocal flagged
                flagged += bool(response.flags)
                writer.write(response)

            def fail(request, reason):
                failed.append(reason)
                log_failure(request.id, reason)

            model = model_pool(args, output).get(args.model) if pending else None
            if pending:
                try:
                    params = sampling_params(args, **({"stop": FEW_SHOT_STOP} if args.few_shot else {}))
                    generate_responses(model, pending, params, write, args.group_size, fail)
                except AloeError as exc:
                    raise AloeError(f"{exc} (finished responses are saved in {output}; re-run to resume)") from None
        prompts = ([AFTER_PROMPT] if args.placement == "after-prompt" else []) + (list(FEW_SHOT_PROMPTS) if args.few_shot else [])
        write_json(run.provenance, provenance(dict(vars(args)), {"model": model.describe() if model else {"spec": args.model}},
                                              prompts))
    print(f"{len(pending) - len(failed)} responses generated ({len(requests) - len(pending)} already in {output}, "
          f"{len(failed)} failed), {flagged} flagged as degenerate; wrote {output} in {time.perf_counter() - started:.1f}s")
    if failed:
        raise AloeError(f"{len(failed)} requests failed (first: {failed[0]}); they are listed in {run.failures}; "
                        "re-run the same command to retry them")


if __name__ == "__main__":
    sys.exit(main())
