"""Write a steerable data directory (train/val/test JSONL of users' choices, plus meta.json).

    python data_generation/synthetic_preferences.py --kind scalar --output runs/steerable/scalar
    python data_generation/synthetic_preferences.py --kind text --output runs/steerable/text
    python data_generation/synthetic_preferences.py --kind aloe --conversations runs/x/conversations.jsonl --output ...
    python data_generation/synthetic_preferences.py --kind ultrafeedback --source datasets/steerable/ultrafeedback_sample.jsonl --output ...

scalar: the paper's synthetic experiment exactly (seed 0, 20,000 pairs, two hidden users). text:
users with opposite tastes over observable attributes of real responses. aloe: each persona of an
ALOE conversation file is one user, its per-turn preferred/rejected replies its choices.
ultrafeedback: one user per rated attribute, all response pairs per prompt, split by prompt.
See docs/steerable.md.
"""

from __future__ import annotations

import sys

from aloe.cli import ArgumentParser, cli_main, output_folder, positive_int, share
from aloe.steerable.sources import KINDS, SourceOptions, build_dataset


@cli_main
def main(argv=None) -> int:
    defaults = SourceOptions()
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--output", type=output_folder, required=True, help="data directory to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--pairs", type=positive_int, default=defaults.pairs, help="scalar: pairs of options")
    parser.add_argument("--source", default=defaults.source,
                        help="text/ultrafeedback: a JSONL file in UltraFeedback's schema, or 'hub' for openbmb/UltraFeedback")
    parser.add_argument("--attributes", nargs="+", default=list(defaults.attributes),
                        help="text: the attributes users like or dislike (two users per attribute)")
    parser.add_argument("--conflicting-share", type=share, default=defaults.conflicting_share,
                        help="text: share of pairs kept on which some users disagree (default: all pairs as drawn)")
    parser.add_argument("--conversations", default=None, help="aloe: conversation file(s) to read users from")
    parser.add_argument("--min-pairs", type=positive_int, default=defaults.min_pairs,
                        help="aloe: users with fewer choices are skipped (and counted)")
    parser.add_argument("--subset", choices=("all", "hh", "hht"), default=defaults.subset,
                        help="ultrafeedback: all pairs, pairs where helpfulness and honesty disagree (hh), "
                             "or pairs where helpfulness, honesty and truthfulness are not unanimous (hht)")
    parser.add_argument("--embedder", default=defaults.embedder,
                        help="how options become features: a sentence embedder spec ('embedded', a folder) or "
                             "'lm:<model spec>' for a language model's last-token hidden state")
    args = parser.parse_args(argv)
    options = SourceOptions(seed=args.seed, pairs=args.pairs, source=args.source, attributes=tuple(args.attributes),
                            conflicting_share=args.conflicting_share, conversations=args.conversations,
                            min_pairs=args.min_pairs, subset=args.subset, embedder=args.embedder)
    counts, meta = build_dataset(args.kind, options, args.output)
    skipped = f", {meta['skipped_users']} users skipped (too few pairs)" if meta.get("skipped_users") else ""
    print(f"{args.kind}: {len(meta['users'])} users, train/val/test {counts['train']}/{counts['val']}/{counts['test']} "
          f"choices, agreement {100 * meta['agreement_rate']:.1f}%{skipped} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
