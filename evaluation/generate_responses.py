"""Responses of a model for prompts under a condition (a persona, a system message, or none).

    python evaluation/generate_responses.py --model embedded --prompts prompts.jsonl --condition-field system
    python evaluation/generate_responses.py --model embedded --prompts prompts.jsonl --placement none

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

from aloe.cli import ArgumentParser, add_model_args, cli_main, model_pool, positive_int, sampling_params, shard_arg, shard_path, take_shard
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, existing_ids
from aloe.models import resolve_spec, short_name
from aloe.responses import PLACEMENTS, generate_responses, prompt_requests


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.set_defaults(temperature=0.0, max_new_tokens=256)
    source = parser.add_argument_group("prompts")
    source.add_argument("--prompts", required=True, help="JSONL of records with id and prompt")
    source.add_argument("--condition-field", default=None,
                        help="the field of each record that holds its condition (default: no condition)")
    source.add_argument("--placement", choices=PLACEMENTS, default="system",
                        help="where the condition goes: a system message, a paragraph after the prompt, or nowhere")
    source.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts")
    parser.add_argument("--group-size", type=positive_int, default=64, help="prompts per backend call")
    parser.add_argument("--shard", type=shard_arg, default=None, help="i/n: every n-th prompt starting at i")
    parser.add_argument("--output", default=None, help="responses JSONL (default: runs/responses/<model>.jsonl)")
    parser.add_argument("--overwrite", action="store_true", help="start the output anew instead of resuming")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    resolve_spec(args.model)
    requests = prompt_requests(args.prompts, args.condition_field, args.placement)
    requests = take_shard(requests[:args.limit], args.shard)
    output = shard_path(args.output or Path("runs") / "responses" / f"{short_name(args.model)}.jsonl", args.shard)
    done = set() if args.overwrite else existing_ids(output)
    pending = [request for request in requests if request.id not in done]
    flagged = 0
    with JsonlWriter(output, overwrite=args.overwrite) as writer:
        def write(response):
            nonlocal flagged
            flagged += bool(response.flags)
            writer.write(response)

        if pending:
            model = model_pool(args, output).get(args.model)
            try:
                generate_responses(model, pending, sampling_params(args), write, args.group_size)
            except AloeError as exc:
                raise AloeError(f"{exc} (finished responses are saved in {output}; re-run to resume)") from None
    print(f"{len(pending)} responses generated ({len(requests) - len(pending)} already in {output}), "
          f"{flagged} flagged as degenerate; wrote {output} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
