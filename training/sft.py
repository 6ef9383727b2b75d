"""Supervised fine-tuning: prompt -> completion, loss on the completion only.

    python training/sft.py --model embedded --data preferred --train-data runs/conversations/conversations.jsonl
    python training/sft.py --model embedded --train-data rows.jsonl          # pairs or system-message rows
    accelerate launch --config_file training/configs/deepspeed_zero3.yaml training/sft.py \
        --config training/recipes/llama3_sft_preferred.yaml

The data format is detected from the records (or named with --format). See docs/training.md.
"""

import sys

from aloe.cli import cli_main
from aloe.training import build_parser, one_line, parse_args, train


@cli_main
def main(argv=None) -> int:
    print(one_line(train("sft", parse_args(build_parser("sft"), argv))))


if __name__ == "__main__":
    sys.exit(main())
