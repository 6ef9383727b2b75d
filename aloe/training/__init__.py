"""Training as a table: methods (SFT, DPO, ORPO, reward models) x data formats (ALOE trees, pairs, system messages).

`training/<method>.py` are thin CLIs over this package:
- `settings`: the flags every training script shares, with the method's and the formats' own;
- `formats`: data-format adapters turning a file into trl's rows (`FORMATS`);
- `methods`: the methods table naming each method's rows, trl trainer and config (`METHODS`);
- `output`: the output dir, its guard and the one-line summary;
- `run`: prepare, build the trainer, train, save.
"""

from aloe.errors import TrainingError
from aloe.training.formats import FORMATS, ROW_KINDS, dpo_examples, fit_left, sft_examples, token_count
from aloe.training.methods import METHODS, mix_examples, supports_packing
from aloe.training.output import check_output_dir, default_output, one_line
from aloe.training.run import build_trainer, prepare, train
from aloe.training.settings import build_parser, grad_accum_steps, lora_config, parse_args, training_dtype

__all__ = [
    "FORMATS", "METHODS", "ROW_KINDS", "TrainingError", "build_parser", "parse_args", "sft_examples", "dpo_examples",
    "fit_left", "token_count", "mix_examples", "default_output", "check_output_dir", "grad_accum_steps",
    "lora_config", "training_dtype", "supports_packing", "prepare", "build_trainer", "train", "one_line",
]
