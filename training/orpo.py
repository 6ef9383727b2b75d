"""ORPO on preference pairs: SFT and an odds-ratio preference term in one stage, from the base model.

    python training/orpo.py --model embedded --train-data pairs.jsonl
    accelerate launch --config_file training/configs/deepspeed_zero3.yaml training/orpo.py \
        --config training/recipes/system_messages/mistral_v02_orpo.yaml

See docs/training.md.
"""

import sys

from aloe.cli import cli_main
from aloe.training import build_parser, one_line, parse_args, train


@cli_main
def main(argv=None) -> int:
    print(one_line(train("orpo", parse_args(build_parser("orpo"), argv))))


if __name__ == "__main__":
    sys.exit(main())
