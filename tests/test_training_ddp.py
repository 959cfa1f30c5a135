"""Multi-process training through torchrun (DDP, gloo on CPU): it runs, ranks share the epoch without overlap."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_training_data import write_toy_cases

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    data = write_toy_cases(tmp_path / "data", 3)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "spineseg", "train", str(data), "-o", str(run), "--model", "resunet", "--hparam", "width=4",
           "--epochs", "3", "--window", "4", "32", "32", "--windows-per-case", "3", "--batch", "2", "--lr", "0.01",
           "--no-n4", "--workers", "0", "--device", "cpu", "--val-fraction", "0.34", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]  # rank 0 only: no duplicated lines
    assert [e for e in events if e["event"] == "done"][0]["model"] == str(run / "model")
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    # 2 training cases x 3 windows = 6 windows per epoch, split 3 + 3 over the ranks, all counted once
    assert [r["windows"] for r in log] == [6, 6, 6]
    losses = [r["loss"] for r in log]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    assert (run / "model" / "model.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
