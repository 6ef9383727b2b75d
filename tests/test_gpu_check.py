"""benchmarks/gpu_check.sh, the prepared GPU check, runs end to end at toy size on a CPU, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_writes_every_benchmarks_figures_at_toy_size(tmp_path, embedded_checkpoint):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--toy", str(tmp_path), "--model-files",
                           str(embedded_checkpoint)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["size"] == "toy" and report["model"]["layers"] == 2
    assert {"gpus", "torch", "cuda"} <= set(report["machine"])
    figures = report["benchmarks"]
    assert set(figures) == {"generation", "lockstep", "training"}
    assert not [name for name, entry in figures.items() if "error" in entry]
    generation = figures["generation"]
    assert generation["batched"]["new_tokens"] > 0 and generation["speedup"] > 0
    assert generation["one_at_a_time"]["tokens_per_s"] > 0
    lockstep = figures["lockstep"]
    assert lockstep["batched"]["turns_done"] == 2 and lockstep["speedup"] > 0
    assert lockstep["speedup_at_2_turns"] > 0
    training = figures["training"]
    for run in ("sft", "sft_packed", "dpo"):
        assert training[run]["tokens_per_s"] > 0, run
    assert "overhead" in training and training["packing_speedup"] > 0
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.count("\n## ") == 3 and "speed-up" in markdown
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md"]  # all that returns
