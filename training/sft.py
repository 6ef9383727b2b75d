"""Supervised fine-tuning on one branch of the tree-structured ALOE conversations.

    python training/sft.py --model embedded --data preferred --conversations runs/conversations/conversations.jsonl
    accelerate launch --config_file training/configs/deepspeed_zero3.yaml training/sft.py \
        --config training/recipes/llama3_sft_preferred.yaml

One example per turn: the history along the branch the conversation continued with, then that
turn's `--data` reply as the completion; loss on the completion only. See docs/training.md.
"""

from __future__ import annotations

import sys

from aloe.cli import cli_main
from aloe.training import build_parser, one_line, parse_args, train


@cli_main
def main(argv=None) -> int:
    args = parse_args(build_parser("sft"), argv)
    print(one_line(train("sft", args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
