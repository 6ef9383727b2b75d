"""Training a steerable reward model: fresh episodes every epoch, the best checkpoint by a full validation pass."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aloe.errors import AloeError
from aloe.jsonl import write_json
from aloe.progress import Progress
from aloe.provenance import provenance
from aloe.steerable.data import read_meta, read_split
from aloe.steerable.episodes import EpisodeSampler, fixed_tasks
from aloe.steerable.models import KINDS, ModelConfig, RewardModel, build_model

CHECKPOINT_FILE = "model.pt"
ORIGINAL_PARTS = {
    "overlap": "context drawn from among the targets, every target scored",
    "sampling": "one k per batch, the same tasks every epoch",
    "network": "NP-BTL's original network (raw-option pair encoder, attention without residual, sum pooling, batch-normed decoder)",
    "selection": "best checkpoint by one batch of validation tasks, checked every 500 // batch size steps (7 at 64); Adam eps 3e-5",
}
SUMMARY_FILE = "summary.json"


@dataclass
class TrainConfig:
    """The paper's settings are the defaults: hidden 256, 8 heads, 20 targets, k in 0..10, 64 tasks, lr 1e-4, 4 x 250 steps."""

    model: str = "np-btl"
    latent: bool = False
    hidden: int = 256
    heads: int = 8
    targets: int = 20
    k_min: int = 0
    k_max: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    epochs: int = 4
    steps_per_epoch: int = 250
    val_tasks: int = 1920  # the validation pass: this many fixed tasks, k spread over k_min..k_max
    original: tuple[str, ...] = ()  # parts of the original code's setup to reproduce, for comparison (ORIGINAL_PARTS)
    seed: int = 0

    def __post_init__(self):
        # "all" names every part; a tuple whatever the caller passed (argparse gives a list).
        self.original = tuple(ORIGINAL_PARTS) if "all" in self.original else tuple(self.original)

    @property
    def name(self) -> str:
        """e.g. np-btl, np-btl-latent, np-btl-original (every original part), btl-original-sampling."""
        parts = "" if not self.original else "-original" if set(self.original) == set(ORIGINAL_PARTS) else \
            "-original-" + "+".join(part for part in ORIGINAL_PARTS if part in self.original)
        return self.model + ("-latent" if self.latent else "") + parts

    @property
    def overlap(self) -> bool:
        return "overlap" in self.original

    def check(self) -> None:
        if self.model not in KINDS:
            raise AloeError(f"unknown model {self.model!r}; choose one of {', '.join(KINDS)}")
        if self.latent and self.model != "np-btl":
            raise AloeError("--latent applies to np-btl only")
        if not 0 <= self.k_min <= self.k_max:
            raise AloeError(f"need 0 <= k-min <= k-max, got {self.k_min} and {self.k_max}")
        unknown = set(self.original) - set(ORIGINAL_PARTS)
        if unknown:
            raise AloeError(f"unknown original part(s) {', '.join(sorted(unknown))}; choose from {', '.join(ORIGINAL_PARTS)}")
        if "network" in self.original and self.model != "np-btl":
            raise AloeError("--original network applies to np-btl only")
        if self.overlap and self.k_max > self.targets:
            raise AloeError(f"with --original overlap the context comes from the targets: k-max {self.k_max} > targets {self.targets}")


def config_from_args(cls, args):
    """A settings dataclass from a script's parsed flags (same names); `--threads` applied to torch first."""
    from dataclasses import fields

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def batched_nll_accuracy(model: RewardModel, sampler: EpisodeSampler, tasks, chunk: int = 512) -> tuple[float, float]:
    """Mean target NLL and accuracy over all the tasks, in chunks (one forward pass each, no gradients)."""
    nll_sum = acc_sum = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(tasks), chunk):
            batch = sampler.batch(tasks.select(slice(start, start + chunk)))
            margin = model.margin(batch)
            n = margin.shape[0]
            nll_sum += float(model.target_nll(margin, batch)) * n
            acc_sum += float(((margin > 0).float() == batch.target_choice).float().mean(1).sum())
    model.train()
    return nll_sum / len(tasks), acc_sum / len(tasks)


def train(data_dir: str | Path, output: str | Path, config: TrainConfig, progress: bool = True) -> dict:
    """Train, keep the weights of the best validation NLL, write `model.pt` and `summary.json`; return the summary."""
    config.check()
    output = Path(output)
    torch.manual_seed(config.seed)
    train_split, val_split = read_split(data_dir, "train"), read_split(data_dir, "val")
    if train_split.dim != val_split.dim:
        raise AloeError(f"{data_dir}: train options have {train_split.dim} features, val options {val_split.dim}")
    ks = list(range(config.k_min, config.k_max + 1))
    train_sampler = EpisodeSampler(train_split, config.targets, config.overlap)
    val_sampler = EpisodeSampler(val_split, config.targets, config.overlap)
    train_sampler.check_k(config.k_max, "train")
    # A real validation pass scores --val-tasks after each epoch; the original scored one batch every 500 // batch size steps.
    original_selection = "selection" in config.original
    val_count = config.batch_size if original_selection else config.val_tasks
    val_tasks = fixed_tasks(val_sampler, val_count, ks, seed=config.seed + 10_000)
    validate_every = max(1, 500 // config.batch_size) if original_selection else config.steps_per_epoch

    model_config = ModelConfig(kind=config.model, input_dim=train_split.dim, hidden=config.hidden,
                               heads=config.heads, latent=config.latent, original="network" in config.original)
    model = build_model(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=3e-5 if original_selection else 1e-8)

    val_nll, val_acc = batched_nll_accuracy(model, val_sampler, val_tasks)
    curve = [{"step": 0, "epoch": 0, "train_loss": None, "val_nll": val_nll, "val_accuracy": val_acc}]
    best = {"step": 0, "val_nll": val_nll, "state": copy.deepcopy(model.state_dict())}
    started, cpu_started = time.perf_counter(), time.process_time()
    step = 0
    total = config.epochs * config.steps_per_epoch
    bar = Progress(total, f"train {config.model}{' latent' if config.latent else ''}", "steps", enabled=progress)
    for epoch in range(1, config.epochs + 1):
        losses = []
        for batch in train_sampler.epoch(config.seed, epoch, config.steps_per_epoch, config.batch_size, ks,
                                           "sampling" in config.original):
            loss, parts = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if step % validate_every and step != total:
                continue
            val_nll, val_acc = batched_nll_accuracy(model, val_sampler, val_tasks)
            curve.append({"step": step, "epoch": epoch, "train_loss": float(np.mean(losses)), "val_nll": val_nll,
                          "val_accuracy": val_acc})
            losses = []
            if val_nll < best["val_nll"]:
                best = {"step": step, "val_nll": val_nll, "state": copy.deepcopy(model.state_dict())}
        point = curve[-1]
        if point["epoch"] == epoch:  # a short epoch may end between two of the original's validations
            bar.note(f"epoch {epoch}: train loss {point['train_loss']:.4f}, val NLL {point['val_nll']:.4f}, "
                     f"val accuracy {point['val_accuracy']:.1%}")
    bar.close()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    output.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model_config.to_dict(), "state_dict": best["state"]}, output / CHECKPOINT_FILE)
    summary = {
        "model": config.name,
        "kind": config.model,
        "data": str(data_dir),
        "data_meta": {key: value for key, value in read_meta(data_dir).items() if key != "provenance"},
        "best_step": best["step"],
        "best_val_nll": best["val_nll"],
        "curve": curve,
        "train_seconds": round(seconds, 2),
        "train_cpu_seconds": round(cpu_seconds, 2),  # what a busy machine does not inflate
        "tasks_per_second": round(step * config.batch_size / seconds, 1) if seconds else None,
        "torch_threads": torch.get_num_threads(),
        "provenance": provenance(asdict(config) | {"data": str(data_dir), "output": str(output)}),
    }
    write_json(output / SUMMARY_FILE, summary)
    return summary


def load_checkpoint(path: str | Path) -> tuple[RewardModel, dict]:
    """A trained reward model and its summary; a folder that is not one is a one-line error."""
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise AloeError(f"{path}: no {CHECKPOINT_FILE} (train one with training/steerable_reward.py)")
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise AloeError(f"{file}: not a readable checkpoint ({type(exc).__name__})") from None
    config = saved.get("config", {}) if isinstance(saved, dict) else {}
    kind = config.get("kind")
    if kind not in KINDS:
        raise AloeError(f"{file}: a {kind or 'unknown'} checkpoint, not a steerable reward model ({', '.join(KINDS)})")
    model = build_model(ModelConfig(**config))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    summary_path = file.parent / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"model": kind}
    return model, summary
