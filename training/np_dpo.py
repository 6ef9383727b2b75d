"""NP-DPO: train a policy steered by a user's inferred z (FiLM + LoRA), or the context-as-text baseline.

    python training/np_dpo.py --data runs/steerable/text --model embedded --conditioning film --output runs/steerable/np-dpo
    python training/np_dpo.py --data runs/steerable/text --model embedded --conditioning text --output runs/steerable/text-dpo

DPO against the unconditioned reference on tasks drawn per user (k context pairs, disjoint targets);
at the end, the implicit reward accuracy per k on the test split. Toy-size defaults; see
docs/steerable.md for the paper's scale.
"""

from __future__ import annotations

import sys
from aloe.cli import ArgumentParser, cli_main, non_negative_int, output_folder, positive_float, positive_int
from aloe.steerable.policy import CONDITIONINGS, PolicyConfig, train_policy
from aloe.steerable.train import config_from_args

DEFAULTS = PolicyConfig()


@cli_main
def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a text data directory (--kind text, aloe or ultrafeedback)")
    parser.add_argument("--output", type=output_folder, required=True)
    parser.add_argument("--model", default=DEFAULTS.model, help="base model spec (embedded, hf:<id-or-path>, a path)")
    parser.add_argument("--conditioning", choices=CONDITIONINGS, default=DEFAULTS.conditioning,
                        help="film: z from the context steers the hidden states; text: the context written into the prompt")
    parser.add_argument("--beta", type=positive_float, default=DEFAULTS.beta)
    parser.add_argument("--lora-r", type=positive_int, default=DEFAULTS.lora_r)
    parser.add_argument("--lora-alpha", type=positive_int, default=DEFAULTS.lora_alpha)
    parser.add_argument("--hidden", type=positive_int, default=DEFAULTS.hidden, help="context encoder / hypernetwork width")
    parser.add_argument("--heads", type=positive_int, default=DEFAULTS.heads)
    parser.add_argument("--film-layers", type=int, nargs="+", default=DEFAULTS.film_layers,
                        help="decoder layer indices whose output FiLM modulates (negative counts from the end)")
    parser.add_argument("--targets", type=positive_int, default=DEFAULTS.targets)
    parser.add_argument("--k-min", type=non_negative_int, default=DEFAULTS.k_min)
    parser.add_argument("--k-max", type=non_negative_int, default=DEFAULTS.k_max)
    parser.add_argument("--tasks-per-step", type=positive_int, default=DEFAULTS.tasks_per_step)
    parser.add_argument("--steps", type=positive_int, default=DEFAULTS.steps)
    parser.add_argument("--lr", type=positive_float, default=DEFAULTS.lr)
    parser.add_argument("--max-length", type=positive_int, default=DEFAULTS.max_length)
    parser.add_argument("--eval-k", type=int, nargs="+", default=DEFAULTS.eval_k)
    parser.add_argument("--eval-tasks", type=positive_int, default=DEFAULTS.eval_tasks)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = config_from_args(PolicyConfig, args)
    summary = train_policy(args.data, args.output, config, progress=not args.no_progress)
    accuracy = ", ".join(f"k={k} {100 * v['mean']:.0f}%" for k, v in summary["implicit_reward_accuracy"].items())
    print(f"{summary['model']}: {config.steps} steps, last loss {summary['losses'][-1]:.4f}, "
          f"implicit reward accuracy {accuracy} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
