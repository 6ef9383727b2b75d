"""Accuracy vs k of trained steerable reward models on the test split's held-out targets.

    python evaluation/eval_steerable.py runs/steerable/btl runs/steerable/np-btl --k 0 1 3 5 10 \
        --output results/steerable/scalar.json

Every model is scored on the same tasks (one batched pass per k). Writes the JSON result, a PNG of
accuracy vs k beside it and a Markdown table (also printed). See docs/steerable.md for the fields.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aloe.cli import ArgumentParser, cli_main, non_negative_int, output_file, positive_int
from aloe.errors import AloeError
from aloe.jsonl import write_json
from aloe.provenance import provenance
from aloe.steerable.data import read_split
from aloe.steerable.evaluate import evaluate, group_seeds, markdown_table, plot_accuracy
from aloe.steerable.train import load_checkpoint

DEFAULT_KS = [0, 1, 3, 5, 10]


@cli_main
def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders written by training/steerable_reward.py")
    parser.add_argument("--data", default=None, help="data directory (default: the one the first checkpoint was trained on)")
    parser.add_argument("--k", type=non_negative_int, nargs="+", default=DEFAULT_KS, help="context sizes to score")
    parser.add_argument("--tasks", type=positive_int, default=1920, help="tasks per k")
    parser.add_argument("--targets", type=positive_int, default=20, help="held-out target pairs per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=output_file, default="results/steerable/result.json")
    args = parser.parse_args(argv)
    loaded = [(Path(path), *load_checkpoint(path)) for path in args.checkpoints]
    data = args.data or loaded[0][2].get("data")
    if not data:
        raise AloeError(f"{args.checkpoints[0]}: its summary names no data directory; pass --data")
    split = read_split(data, "test")
    names = {}
    for path, model, summary in loaded:
        if model.config.input_dim != split.dim:
            raise AloeError(f"{path}: trained on {model.config.input_dim} features, {data} has {split.dim}")
        name = path.name if path.name not in names else str(path)
        names[name] = (model, summary)
    result = evaluate([(name, model) for name, (model, _) in names.items()], split, args.k, args.tasks, args.targets, args.seed)
    result["data"] = str(data)
    result["checkpoints"] = {name: str(path) for name, (path, *_rest) in zip(names, loaded)}
    result["seed_groups"] = group_seeds(result, {name: summary.get("model", name) for name, (_, summary) in names.items()})
    result["provenance"] = provenance(vars(args))
    output = Path(args.output)
    write_json(output, result)
    plot_accuracy(result, output.with_suffix(".png"))
    table = markdown_table(result)
    output.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(markdown_table(result, per_model=False) if result["seed_groups"] else table)  # seeds' own rows: in the .md
    print(f"-> {output} (+ .png, .md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
