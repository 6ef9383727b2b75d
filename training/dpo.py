"""DPO on the per-turn preference pairs of the tree-structured ALOE conversations.

    python training/dpo.py --model embedded --conversations runs/conversations/conversations.jsonl
    python training/dpo.py --model embedded_sft_preferred --conversations ...   # start from an SFT model
    accelerate launch --config_file training/configs/deepspeed_zero3.yaml training/dpo.py \
        --config training/recipes/llama3_dpo.yaml

One pair per turn: the history along the branch the conversation continued with, `preferred` as
chosen and `rejected` as rejected. With LoRA the frozen base is the reference. See docs/training.md.
"""

from __future__ import annotations

import sys

from aloe.cli import cli_main
from aloe.training import build_parser, one_line, parse_args, train


@cli_main
def main(argv=None) -> int:
    args = parse_args(build_parser("dpo"), argv)
    print(one_line(train("dpo", args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
