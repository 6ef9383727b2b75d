"""Steerable reward models: training wall time and tasks/s per model, and batched vs per-batch evaluation.

    python benchmarks/bench_steerable.py --runs runs/steerable-paper          # timings of trained checkpoints
    python benchmarks/bench_steerable.py --train --steps-per-epoch 25 --runs runs/steerable-bench  # 4 x 25 steps each here

Training: each model's 4 x 250 steps of 64 tasks at the paper's settings, timed by the training loop
itself (`train_seconds`, `train_cpu_seconds`, `tasks_per_second` in its summary.json), against the
original code's 100-170 s per model on 2 CPU cores. With `--train --steps-per-epoch N` the harness
trains each model once for 4 x N steps and scales the CPU seconds to 4 x 250 steps (CPU time, unlike
wall time, is not inflated by other processes on a shared machine). Evaluation: 1,920 test tasks at k = 0/1/3/5/10 scored in one batched pass
per k, against the original's 30 batches of 64 per k, on the same tasks and the same model. Prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KS = [0, 1, 3, 5, 10]
MODELS = [("btl", False), ("dpl", False), ("np-btl", False), ("np-btl", True)]


def training_rows(runs: Path) -> list[dict]:
    rows: dict[str, list[dict]] = {}
    for summary_file in sorted(runs.glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        if summary.get("kind") not in ("btl", "dpl", "np-btl"):
            continue
        rows.setdefault(summary["model"], []).append(summary)
    out = []
    for model, summaries in rows.items():
        seconds = [s["train_seconds"] for s in summaries]
        steps = [s["curve"][-1]["step"] for s in summaries]
        cpu = [s["train_cpu_seconds"] * 1000 / n for s, n in zip(summaries, steps) if "train_cpu_seconds" in s]
        out.append({"model": model, "runs": len(summaries), "steps": steps[0], "wall_s_mean": statistics.mean(seconds),
                    "cpu_s_per_1000_steps": statistics.mean(cpu) if cpu else None,
                    "wall_s_min": min(seconds), "wall_s_max": max(seconds),
                    "tasks_per_s_mean": statistics.mean(s["tasks_per_second"] for s in summaries),
                    "threads": summaries[0].get("torch_threads")})
    return out


def time_evaluation(checkpoint: Path, data: Path, tasks: int) -> dict:
    from aloe.steerable.data import read_split
    from aloe.steerable.episodes import EpisodeSampler, fixed_tasks
    from aloe.steerable.evaluate import predict
    from aloe.steerable.train import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    split = read_split(data, "test")
    sampler = EpisodeSampler(split, 20)
    drawn = {k: fixed_tasks(sampler, tasks, k, 0) for k in KS}
    seconds, predictions = {}, {}
    for chunk in (tasks, 512, 256, 64):  # one pass per k, then smaller chunks (64: the original's batches)
        started = time.perf_counter()
        predictions[chunk] = {k: predict(model, sampler, drawn[k], score_all=True, chunk=chunk)[0] for k in KS}
        seconds[chunk] = time.perf_counter() - started
    same = all(abs(predictions[tasks][k] - predictions[c][k]).max() < 1e-5 for c in seconds for k in KS)
    return {"model": checkpoint.name, "tasks_per_k": tasks, "seconds_by_chunk": seconds, "same_predictions": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/steerable-paper", help="folder of trained checkpoints (one per model and seed)")
    parser.add_argument("--data", default=None, help="scalar data dir (default: RUNS/scalar)")
    parser.add_argument("--train", action="store_true", help="train each model once into RUNS first (minutes per model)")
    parser.add_argument("--steps-per-epoch", type=int, default=250, help="with --train: steps per epoch (4 epochs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=1920)
    parser.add_argument("--output", default=None, help="JSON of the measurements (default: RUNS/bench_steerable.json)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    data = Path(args.data or runs / "scalar")
    if not (data / "train.jsonl").is_file():
        from aloe.steerable.sources import SourceOptions, build_dataset

        build_dataset("scalar", SourceOptions(), data)
    if args.train:
        from aloe.steerable.train import TrainConfig, train

        for kind, latent in MODELS:
            name = kind + ("-latent" if latent else "")
            train(data, runs / f"bench-{name}", TrainConfig(model=kind, latent=latent, steps_per_epoch=args.steps_per_epoch),
                  progress=False)
    training = training_rows(runs)
    checkpoint = next(p.parent for p in sorted(runs.glob("*/summary.json")) if json.loads(p.read_text()).get("model") == "np-btl")
    evaluation = time_evaluation(checkpoint, data, args.tasks)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}"
    print(f"Machine: {machine}; load average {os.getloadavg()[0]:.1f}\n")
    print("| model | runs x steps | wall s (mean, min-max) | tasks/s (wall) | CPU s per 1,000 steps | original 100-170 s / ours (CPU) |")
    print("|---|---|---|---|---|---|")
    for row in training:
        cpu = row["cpu_s_per_1000_steps"]
        ratio = f"{100 / cpu:.2f}-{170 / cpu:.2f}x" if cpu else "n/a"
        print(f"| {row['model']} | {row['runs']} x {row['steps']} | {row['wall_s_mean']:.0f} ({row['wall_s_min']:.0f}-{row['wall_s_max']:.0f}) "
              f"| {row['tasks_per_s_mean']:.0f} | {cpu:.0f} | {ratio} |" if cpu else
              f"| {row['model']} | {row['runs']} x {row['steps']} | {row['wall_s_mean']:.0f} ({row['wall_s_min']:.0f}-{row['wall_s_max']:.0f}) "
              f"| {row['tasks_per_s_mean']:.0f} | n/a | n/a |")
    timings = ", ".join(f"chunks of {c}: {t:.2f} s ({evaluation['seconds_by_chunk'][64] / t:.2f}x the 64-task batches)"
                        for c, t in evaluation["seconds_by_chunk"].items())
    print(f"\nEvaluation ({evaluation['model']}, {args.tasks} tasks x {len(KS)} k): {timings} "
          f"(same predictions: {evaluation['same_predictions']})")
    output = Path(args.output or runs / "bench_steerable.json")
    output.write_text(json.dumps({"machine": machine, "load_average": os.getloadavg(), "training": training,
                                  "evaluation": evaluation}, indent=2) + "\n")


if __name__ == "__main__":
    main()
