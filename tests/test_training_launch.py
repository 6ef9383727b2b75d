"""Multi-process training through `accelerate launch` with the shipped DDP config, on CPU (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_dpo_with_the_ddp_config(tmp_path, tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU smoke test; on a GPU machine launch the recipes instead")
    record = {"id": "c", "profile": "p", "personality": "q", "conversations": [
        {"user": f"U{k}", "assistant": {"preferred": f"P{k}", "rejected": f"R{k}"}, "chosen": "preferred"}
        for k in range(4)]}
    conversations = tmp_path / "conversations.jsonl"
    conversations.write_text(json.dumps(record) + "\n")
    out = tmp_path / "tiny_dpo"
    # The shipped config says 8 GPUs in bf16; on CPU we override the count and precision, nothing else.
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(ROOT / "training/configs/ddp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
               str(ROOT / "training/dpo.py"), "--model", str(tiny_model_dir), "--conversations", str(conversations),
               "--output", str(out), "--max-steps", "2", "--batch-size", "1", "--warmup", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    # Two processes each took one pair per step: 2 steps covered 4 pairs, a whole epoch.
    assert summary["epochs_done"] == pytest.approx(1.0)
    from aloe.models import SamplingParams, load_model

    reply = load_model(str(out)).generate([[{"role": "user", "content": "hi"}]],
                                          SamplingParams(max_new_tokens=3, temperature=0))[0]
    assert reply.completion_tokens >= 1
