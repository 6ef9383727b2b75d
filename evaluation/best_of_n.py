"""Best-of-N: sample N responses per prompt and keep the one a reward model scores highest.

    python evaluation/best_of_n.py --model embedded --reward-model model_output/embedded_reward --n 4 \
        --output runs/sysmsg/best_of_4.jsonl                      # the shipped benchmark's prompts
    python evaluation/best_of_n.py --model embedded --reward-model RM --prompts prompts.jsonl --condition-field system

Writes one response record per prompt (the generic response format: id, prompt, condition, response,
finish_reason, flags) plus best_index, reward and every sample with its reward in `samples`; the file
is what eval_multifaceted.py --responses and win_rate.py read. See docs/system_messages.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from aloe.cli import ArgumentParser, add_model_args, cli_main, model_pool, output_file, positive_int, sampling_params
from aloe.errors import AloeError
from aloe.jsonl import rewrite_jsonl
from aloe.responses import PLACEMENTS, prompt_requests
from aloe.system_messages.best_of_n import RewardModel, best_of_n
from aloe.system_messages.data import BENCH


@cli_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.set_defaults(temperature=1.0, top_p=0.9, max_new_tokens=512)
    parser.add_argument("--reward-model", required=True, help="folder of a reward model (training/reward_model.py)")
    parser.add_argument("--n", type=positive_int, default=4, help="samples per prompt (authors' code: 4; paper: 64)")
    parser.add_argument("--prompts", default=str(BENCH), help="JSONL of records with id and prompt "
                        "(default: the shipped benchmark, its system message as the condition)")
    parser.add_argument("--condition-field", default="system", help="field holding each prompt's system message "
                        "('' for none)")
    parser.add_argument("--placement", choices=PLACEMENTS, default="system")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts")
    parser.add_argument("--reward-batch-size", type=positive_int, default=8, help="chats per reward-model forward")
    parser.add_argument("--output", type=output_file, required=True, help="best responses JSONL (replaced)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    output = Path(args.output)
    if output.is_dir():
        raise AloeError(f"{output}: is a directory; --output must be a JSONL file path")
    requests = prompt_requests(args.prompts, args.condition_field or None, args.placement)[:args.limit]
    reward_model = RewardModel(args.reward_model, args.reward_batch_size, dtype=args.dtype)
    model = model_pool(args, output).get(args.model)
    best = best_of_n(model, reward_model, requests, args.n, sampling_params(args))
    rewrite_jsonl(output, best)
    mean = sum(record.reward for record in best) / len(best)
    print(f"kept the best of {args.n} samples for {len(best)} prompts (mean best reward {mean:.3f}); "
          f"wrote {output} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
