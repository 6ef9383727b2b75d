"""Train a steerable reward model (BTL, DPL or NP-BTL) on a steerable data directory.

    python training/steerable_reward.py --data runs/steerable/scalar --model np-btl --output runs/steerable/np-btl
    python training/steerable_reward.py --data runs/steerable/scalar --model np-btl --latent --output ...

The defaults are the paper's (hidden 256, 8 heads, 20 targets, k in 0..10, 64 tasks a batch, Adam
lr 1e-4, 4 epochs of 250 steps, fresh tasks every epoch); the best checkpoint by a full validation
pass is kept. Writes model.pt and summary.json (with the training curve). See docs/steerable.md.
"""

from __future__ import annotations

import sys
from aloe.cli import ArgumentParser, cli_main, non_negative_int, output_folder, positive_float, positive_int
from aloe.steerable.models import KINDS
from aloe.steerable.train import ORIGINAL_PARTS, TrainConfig, config_from_args, train

DEFAULTS = TrainConfig()


@cli_main
def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data directory with train.jsonl, val.jsonl (test.jsonl for evaluation)")
    parser.add_argument("--model", choices=KINDS, default=DEFAULTS.model)
    parser.add_argument("--latent", action="store_true", help="np-btl: latent z trained with the ELBO (default: deterministic z)")
    parser.add_argument("--output", type=output_folder, required=True, help="checkpoint folder")
    parser.add_argument("--hidden", type=positive_int, default=DEFAULTS.hidden)
    parser.add_argument("--heads", type=positive_int, default=DEFAULTS.heads)
    parser.add_argument("--targets", type=positive_int, default=DEFAULTS.targets, help="target pairs per task")
    parser.add_argument("--k-min", type=non_negative_int, default=DEFAULTS.k_min, help="fewest context pairs of a training task")
    parser.add_argument("--k-max", type=non_negative_int, default=DEFAULTS.k_max, help="most context pairs of a training task")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size, help="tasks per step")
    parser.add_argument("--lr", type=positive_float, default=DEFAULTS.lr)
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs)
    parser.add_argument("--steps-per-epoch", type=positive_int, default=DEFAULTS.steps_per_epoch)
    parser.add_argument("--val-tasks", type=positive_int, default=DEFAULTS.val_tasks, help="tasks of the validation pass")
    parser.add_argument("--original", nargs="+", choices=[*ORIGINAL_PARTS, "all"], default=[], metavar="PART",
                        help="reproduce parts of the original code's setup, for comparison: "
                             + "; ".join(f"{name}: {what}" for name, what in ORIGINAL_PARTS.items())
                             + "; all: every part")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = config_from_args(TrainConfig, args)
    summary = train(args.data, args.output, config, progress=not args.no_progress)
    best = next(point for point in summary["curve"] if point["step"] == summary["best_step"])
    print(f"{summary['model']}: best step {summary['best_step']} (val NLL {best['val_nll']:.4f}, accuracy "
          f"{100 * best['val_accuracy']:.1f}%), {summary['train_seconds']} s, {summary['tasks_per_second']} tasks/s "
          f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
