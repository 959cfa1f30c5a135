"""scripts/gpu_run.sh, dry run on the CPU: every step runs on a tiny pack with a tiny budget and fills OUT."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from test_training_data import write_toy_cases

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_run_dry_run_writes_every_result(tmp_path):
    pack = write_toy_cases(tmp_path / "pack", 4)
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out), "PEER_MIN": "0.05", "WIDTH": "4", "INPLANE_MM": "0.8",
           "WORKERS": "0", "NNUNET_HPARAM": "filters=[4,8,16]", "PYTHON": sys.executable, "WORK": str(tmp_path / "w"),
           "WHEELS": str(tmp_path / "no-wheels"), "OMP_NUM_THREADS": "1",
           "EXTRA": "--window 4 32 32 --batch 2 --windows-per-case 2 --no-n4"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(pack)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"throughput.md", "peer.md", "model.tar.gz", "runs.tar.gz", "log.txt"}
    assert "hybrid" in (out / "throughput.md").read_text() and "nnunet-like" in (out / "throughput.md").read_text()
    peer = (out / "peer.md").read_text()
    assert "| hybrid (" in peer and "width=4" in peer and "| nnunet-like (" in peer
    assert "Validation cases (1): case" in peer
    with tarfile.open(out / "model.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"model/model.json", "model/model.safetensors", "model/model.onnx"} <= names
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert "runs/hybrid/log.jsonl" in names and "runs/nnunet-like/split.json" in names
    assert not any("checkpoints" in n for n in names)
    assert "done; results in" in (out / "log.txt").read_text()


def test_gpu_run_without_pack_exits_2(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(tmp_path / "none")], cwd=ROOT,
                          env={**os.environ, "OUT": str(tmp_path / "out")}, capture_output=True, text=True)
    assert done.returncode == 2 and "training pack" in done.stderr and not (tmp_path / "out").exists()


def test_gpu_run_setup_only_unpacks_the_packages_and_stops(tmp_path):
    import tarfile as tf

    wheels = tmp_path / "wheels"
    pkg = tmp_path / "src" / "spineseg_carried_probe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    wheels.mkdir()
    with tf.open(wheels / "deps.tar.xz", "w:xz") as tar:
        tar.add(pkg, arcname="spineseg_carried_probe")
    env = {**os.environ, "SETUP_ONLY": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "w"),
           "WHEELS": str(wheels), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "w" / "site" / "spineseg_carried_probe" / "__init__.py").is_file()
    assert "set-up only" in done.stdout and not (tmp_path / "out" / "throughput.md").exists()
