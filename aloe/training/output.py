"""A training run's output dir: its default name, the guard against mixing two models, and the summary."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from aloe.errors import TrainingError
from aloe.models import model_output_dir, short_name

SUMMARY_FILE = "training_summary.json"
# What --overwrite deletes from an output dir: only what a training run writes there, never other files.
RUN_ARTEFACTS = ("checkpoint-*", "adapter_*", "model*.safetensors", "model.safetensors.index.json",
                 "pytorch_model*.bin", "config.json", "generation_config.json", "tokenizer*", "chat_template.jinja",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "runs", SUMMARY_FILE, "README.md")


def default_output(method: str, model: str, data: str | None = None) -> Path:
    """`model_output/<short model name>_<method>[_<data>]`: the names evaluation's --model accepts."""
    suffix = f"{method}_{data}" if data else method
    return model_output_dir() / f"{short_name(model)}_{suffix}"


def run_marker(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """What identifies a run's model in its output dir: a different marker there means a different model."""
    return {"base_model": args.model, "method": method, "data": getattr(args, "data", None)}


def read_summary(output: Path) -> dict | None:
    path = output / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_output_dir(output: Path, marker: dict[str, Any], overwrite: bool, model_path: str | None) -> str:
    """Refuse an output dir that holds another model; returns "new", "resume" or "finished"."""
    if model_path and output.resolve() == Path(model_path).resolve():
        raise TrainingError(f"--output {output} is the model being trained from: choose another output dir")
    if output.exists() and not output.is_dir():
        raise TrainingError(f"--output {output} is a file: give a directory")
    if not output.exists() or not any(output.iterdir()):
        return "new"
    if overwrite:
        for pattern in RUN_ARTEFACTS:
            for path in output.glob(pattern):
                # Every process of a multi-GPU launch runs this check; another may have deleted it first.
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return "new"
    summary = read_summary(output)
    if summary is None:
        raise TrainingError(f"{output} already holds files from something else (no {SUMMARY_FILE}): "
                            "pass --overwrite to replace them or choose another --output")
    theirs = {key: summary.get(key) for key in marker}
    if theirs != marker:
        raise TrainingError(f"{output} holds a model trained with {theirs}, not {marker}: "
                            "pass --overwrite to replace it or choose another --output")
    return "finished" if summary.get("status") == "finished" else "resume"


def one_line(summary: dict[str, Any]) -> str:
    """The scripts' final line: what was trained, how far, and where it is."""
    if summary.get("status") != "finished":
        return "nothing trained"
    counts = summary["data_counts"]
    unit, amount = next(iter(counts.items()))
    curve = summary["loss_curve"]
    loss = f", loss {curve[0]['loss']:.3f} -> {curve[-1]['loss']:.3f}" if curve else ""
    rate = summary.get("tokens_per_second")
    speed = f", {rate:.0f} tokens/s" if rate else ""
    accuracy = (summary.get("eval") or {}).get("pairwise", {}).get("accuracy")
    held_out = f", held-out pair accuracy {accuracy:.3f}" if accuracy is not None else ""
    best = summary.get("best_checkpoint")
    if best:
        held_out += f", best checkpoint step {best['step']} (eval loss {best['eval_loss']:.3f})"
    return (f"{summary['method']} {summary['base_model']}: {counts['examples']} examples from "
            f"{amount} {unit}, {summary['steps']} steps{loss}{held_out}{speed}, "
            f"{summary['wall_time_s']:.0f}s; saved {summary['saved']} model to {summary['output']}")
