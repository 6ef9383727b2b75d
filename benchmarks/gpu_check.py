"""One prepared GPU check: the generation, lockstep and training benchmarks on one model, figures in one file.

Run it through benchmarks/gpu_check.sh, which installs the carried wheels first (docs/BENCHMARKS.md):

    bash benchmarks/gpu_check.sh --prepare     # here, where PyPI is reachable: .whl/ and .gpu_check/
    bash benchmarks/gpu_check.sh               # on the GPU machine, carrying .whl and .gpu_check: $OUT/gpu_check.*
    bash benchmarks/gpu_check.sh --toy DIR     # a tiny model on CPU in seconds (tests/test_gpu_check.py)

The GPU machine fetches nothing and the embedded model's weights (98 MB) are over what travels, so the
benchmarks run a model of SmolLM2-135M-Instruct's shape (its config, tokenizer and chat template,
copied by --prepare) with random weights drawn at std 0.2: greedy replies are distinct gibberish that
rarely ends early, so replies run to their token caps. The figures are speeds (each a ratio of two ways
of doing the same work in one run), not quality. Each harness's figures are written as soon as it
ends, so a run cut short keeps what finished; a harness that fails is recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREPARED = ROOT / ".gpu_check" / "model"  # config, tokenizer and chat template, from --prepare
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json")
TOY_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8)

# (figure name, harness, flags at toy size, flags on the GPU): the GPU sizes fit about 6 minutes on one H200.
HARNESSES = [
    ("generation", "bench_generation.py",
     ["--prompts", "4", "--max-new-tokens", "8", "--batch-size", "4"],
     ["--prompts", "32", "--max-new-tokens", "128", "--batch-size", "32"]),
    ("lockstep", "bench_eval_aloe.py",
     ["--conversations", "2", "--sequential", "1", "--turns", "1", "--target-turns", "2", "--batch-size", "2",
      "--max-new-tokens", "4"],
     ["--conversations", "100", "--sequential", "5", "--turns", "2", "--batch-size", "100"]),
    ("training", "bench_training.py",
     ["--conversations", "2", "--turns", "2", "--steps", "1", "--batch-size", "1", "--max-length", "128",
      "--repeats", "1"],
     ["--conversations", "64", "--turns", "10", "--steps", "20", "--batch-size", "8", "--max-length", "2048",
      "--repeats", "1"]),
]


class Tee(io.TextIOBase):
    """Writes to every stream it holds: the harness's table reaches the log and the Markdown file."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def prepare() -> None:
    """Copy the embedded model's config, tokenizer and chat template (not its weights) into .gpu_check/."""
    from aloe.embedded import embedded_chat_checkpoint

    source = embedded_chat_checkpoint()
    PREPARED.mkdir(parents=True, exist_ok=True)
    copied = [name for name in MODEL_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, PREPARED / name)
    print(f"copied {', '.join(copied)} to {PREPARED.relative_to(ROOT)}")


def build_model(files: Path, target: Path, toy: bool) -> dict:
    """A checkpoint of the shape in `files` with random weights; returns what describes it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(files, initializer_range=0.2, **(TOY_SHAPE if toy else {}))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(files).save_pretrained(target)
    return {"shape_of": str(files), "parameters": sum(p.numel() for p in model.parameters()),
            "layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "weights": "random, std 0.2"}


def machine() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"gpus": gpus, "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}


def run_harness(script: str, argv: list[str]) -> str:
    """Run a harness's main in this process; returns what it printed (also echoed to stdout)."""
    spec = importlib.util.spec_from_file_location(f"gpu_check_{Path(script).stem}", ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    printed = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        status = module.main(argv)
    if status:
        raise RuntimeError(f"{script} exited with status {status}")
    return printed.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=os.environ.get("OUT") or "runs/gpu_check",
                        help="folder for gpu_check.json and gpu_check.md (default: $OUT, else runs/gpu_check)")
    parser.add_argument("--toy", action="store_true", help="a tiny model and tiny sizes: seconds on a CPU")
    parser.add_argument("--model-files", default=None,
                        help="folder with the model's config and tokenizer (default: .gpu_check/model from "
                             "--prepare, else the embedded checkpoint)")
    parser.add_argument("--only", nargs="+", choices=[name for name, *_ in HARNESSES], default=None,
                        help="run only these benchmarks")
    parser.add_argument("--prepare", action="store_true", help="copy the model files into .gpu_check/ and stop")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare()
        return 0

    started = time.perf_counter()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.model_files:
        files = Path(args.model_files)
    elif PREPARED.is_dir():
        files = PREPARED
    else:
        from aloe.embedded import embedded_chat_checkpoint

        files = embedded_chat_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))  # outside $OUT: only the two figure files go back
    report = {"size": "toy" if args.toy else "gpu", "machine": machine(),
              "model": build_model(files, work / "model", args.toy), "benchmarks": {}}
    markdown = [f"# GPU check ({report['size']} size)\n", f"machine: {json.dumps(report['machine'])}\n",
                f"model: {json.dumps(report['model'])}\n"]

    def save() -> None:
        report["wall_s"] = time.perf_counter() - started
        (output / "gpu_check.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (output / "gpu_check.md").write_text("\n".join(markdown), encoding="utf-8")

    save()
    for name, script, toy_flags, gpu_flags in HARNESSES:
        if args.only and name not in args.only:
            continue
        figures = work / f"{name}.json"
        flags = [*(toy_flags if args.toy else gpu_flags), "--model", str(work / "model"), "--json", str(figures)]
        print(f"\n== {name}: benchmarks/{script} {' '.join(flags)}", flush=True)
        began = time.perf_counter()
        try:
            printed = run_harness(script, flags)
            entry = json.loads(figures.read_text(encoding="utf-8"))
        except Exception as exc:  # one harness failing must not lose the others' figures
            traceback.print_exc()
            printed, entry = "", {"error": f"{exc.__class__.__name__}: {exc}"}
        report["benchmarks"][name] = {**entry, "harness": script, "flags": flags[:-4], "harness_wall_s":
                                      time.perf_counter() - began}
        table = "\n".join(line for line in printed.splitlines() if not line.startswith("{'"))  # not trainer logs
        markdown += [f"## {name} (benchmarks/{script}, {time.perf_counter() - began:.0f} s)\n",
                     table or f"failed: {entry['error']}\n"]
        save()
    failed = [name for name, entry in report["benchmarks"].items() if "error" in entry]
    print(f"\nwrote {output / 'gpu_check.json'} and gpu_check.md in {time.perf_counter() - started:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
