"""A Bradley-Terry reward model on preference pairs; its summary holds the pairwise accuracy on held-out pairs.

    python training/reward_model.py --model embedded --train-data pairs.jsonl --eval-fraction 0.1
    python training/reward_model.py --model embedded --train-data train.jsonl --eval-data test.jsonl

The model is a one-output sequence classifier (the score of a reply). See docs/training.md.
"""

import sys

from aloe.cli import cli_main
from aloe.training import build_parser, one_line, parse_args, train


@cli_main
def main(argv=None) -> int:
    print(one_line(train("reward", parse_args(build_parser("reward"), argv))))


if __name__ == "__main__":
    sys.exit(main())
