"""Responses of a model for prompts under a condition (a persona, a system message, or none).

    python evaluation/generate_responses.py --model embedded --prompts prompts.jsonl --condition-field system
    python evaluation/generate_responses.py --model embedded --prompts prompts.jsonl --placement none
    python evaluation/generate_responses.py --model model_output/pt_dpo --pairs test.personas.jsonl \
        --persona retr-chosen --train-pairs train.personas.jsonl                 # persona tailoring

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
    ArgumentParser, add_model_args, cli_main, model_pool, output_file, positive_int, sampling_params, shard_arg,
    take_shard,
)
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, existing_ids, write_json
from aloe.models import resolve_spec, short_name
from aloe.runs import RunFiles
from aloe.provenance import provenance
from aloe.responses import AFTER_PROMPT, PLACEMENTS, generate_responses, prompt_requests
from aloe.tailoring.generation import PERSONA_TYPES, persona_requests
from aloe.tailoring.inference import GENERAL
from aloe.tailoring.pairs import read_pairs


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
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
    source.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts")
    parser.add_argument("--group-size", type=positive_int, default=64, help="prompts per backend call")
    parser.add_argument("--shard", type=shard_arg, default=None, help="i/n: every n-th prompt starting at i")
    parser.add_argument("--output", type=output_file, default=None, help="responses JSONL (default: runs/responses/<model>.jsonl)")
    parser.add_argument("--overwrite", action="store_true", help="start the output anew instead of resuming")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    resolve_spec(args.model)
    if (args.prompts is None) == (args.pairs is None):
        raise AloeError("give exactly one of --prompts FILE or --pairs FILE")
    if args.prompts:
        requests = prompt_requests(args.prompts, args.condition_field, args.placement)
    else:
        pairs = read_pairs(args.pairs)[:args.limit]
        requests = persona_requests(args.pairs, pairs, args.persona, args.placement, args.domain,
                                    args.train_pairs, args.system_persona, args.embedder)
    requests = take_shard(requests[:args.limit], args.shard)
    name = short_name(args.model) + (f".{args.persona}" if args.pairs else "")
    run = RunFiles(args.output or Path("runs") / "responses" / f"{name}.jsonl", args.shard)
    output = run.main
    args.cache = str(run.cache(args.cache))
    flagged = 0
    with run.lock():
        done = set() if args.overwrite else existing_ids(output)
        pending = [request for request in requests if request.id not in done]
        with JsonlWriter(output, overwrite=args.overwrite) as writer:
            def write(response):
                nonlocal flagged
                flagged += bool(response.flags)
                writer.write(response)

            model = model_pool(args, output).get(args.model) if pending else None
            if pending:
                try:
                    generate_responses(model, pending, sampling_params(args), write, args.group_size)
                except AloeError as exc:
                    raise AloeError(f"{exc} (finished responses are saved in {output}; re-run to resume)") from None
        write_json(run.provenance, provenance(dict(vars(args)), {"model": model.describe() if model else {"spec": args.model}},
                                              [AFTER_PROMPT] if args.placement == "after-prompt" else []))
    print(f"{len(pending)} responses generated ({len(requests) - len(pending)} already in {output}), "
          f"{flagged} flagged as degenerate; wrote {output} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
