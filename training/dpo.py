"""DPO on preference pairs: ALOE turns (preferred over rejected), preference pairs, trl preference rows.

    python training/dpo.py --model embedded --train-data runs/conversations/conversations.jsonl
    python training/dpo.py --model embedded_sft_preferred --train-data ...   # start from an SFT model
    accelerate launch --config_file training/configs/deepspeed_zero3.yaml training/dpo.py \
        --config training/recipes/llama3_dpo.yaml

With LoRA the frozen base is the reference. See docs/training.md.
"""

import sys

from aloe.cli import cli_main
from aloe.training import build_parser, one_line, parse_args, train


@cli_main
def main(argv=None) -> int:
    print(one_line(train("dpo", parse_args(build_parser("dpo"), argv))))


if __name__ == "__main__":
    sys.exit(main())
