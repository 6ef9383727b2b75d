"""Join the pools grown by `generate_personas.py --shard i/n` workers into one pool, novel across shards.

    python persona_generation/merge_pools.py runs/personas/profiles.shard-*-of-4.jsonl \
        --output runs/personas/profiles.jsonl

Seeds (source "seed") are kept once each. Generated personas are taken shard by shard, in file
order, through the same novelty filter the workers used: each worker only saw its own pool, so two
shards may have accepted near-duplicates of each other, and only the first of them is kept.
Kept records get their max similarity against the merged pool. Run generate_personas.py on the
merged file afterwards to top it up to the target.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aloe.cli import ArgumentParser, cli_main, output_file
from aloe.sentence_embeddings import NoveltyFilter, load_embedder
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter
from aloe.interaction.personas import load_pool


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="pool files (shard outputs), merged in the order given")
    parser.add_argument("--output", type=output_file, required=True, help="merged pool file (written anew)")
    parser.add_argument("--threshold", type=float, default=0.6, help="novelty threshold, as for generation (paper: 0.6)")
    parser.add_argument("--embedder", default="embedded", help="sentence embedder spec, as for generation")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 < args.threshold <= 1:
        raise AloeError(f"--threshold must be in (0, 1], got {args.threshold}")
    output = Path(args.output)
    if any(Path(path).resolve() == output.resolve() for path in args.inputs):
        raise AloeError(f"--output {output} is also an input: write the merge to a new file")
    pools = [load_pool(path) for path in args.inputs]

    seeds, generated, seen = [], [], set()
    for pool in pools:
        for persona in pool:
            if persona.id in seen:
                continue
            seen.add(persona.id)
            (seeds if persona.source == "seed" else generated).append(persona)

    novelty = NoveltyFilter(load_embedder(args.embedder), args.threshold)
    novelty.add([persona.text for persona in seeds], [persona.id for persona in seeds])
    decisions = novelty.filter([persona.text for persona in generated], [persona.id for persona in generated])
    kept = [persona.model_copy(update={"max_similarity": round(decision.max_similarity, 4)})
            for persona, decision in zip(generated, decisions) if decision.accepted]
    with JsonlWriter(output, overwrite=True) as writer:
        writer.write_all(seeds)
        writer.write_all(kept)
    print(f"merged {len(args.inputs)} pools into {output}: {len(seeds)} seeds + {len(kept)} generated "
          f"({len(generated) - len(kept)} generated dropped as too similar across shards)")


if __name__ == "__main__":
    sys.exit(main())
