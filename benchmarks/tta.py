"""What flip test-time augmentation costs: ``spineseg segment`` with and without ``--tta``, side by side.

Each round runs the CLI (a fresh process: start, read, N4, inference, write) once without
and once with ``--tta``, alternating, on the same input and model, so both see the same
machine load. The table gives the CPU seconds of each process (user + system, all its
threads: what the run costs, and far less sensitive to other load on a shared machine than
the wall clock), the wall seconds, and the medians of the per-round ratios.

    .venv/bin/python benchmarks/tta.py [--image FILE ...] [--rounds 3] [--backend torch onnx]

Without ``--image`` the input is an 880x880x12 phantom at 0.345 x 0.345 x 4.4 mm (the design's
thick-slice geometry). The model is the bundled default model unless ``--model`` is given.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_segment(image: Path, out: Path, model: Path, backend: str, tta: bool) -> Tuple[float, float]:
    """(CPU seconds, wall seconds) of one ``spineseg segment`` process."""
    cmd = [sys.executable, "-m", "spineseg", "segment", str(image), "-o", str(out), "--model", str(model),
           "--device", "cpu", "--backend", backend, "--overwrite", "--tta" if tta else "--no-tta"]
    with tempfile.TemporaryFile() as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own resource usage
        seconds = time.perf_counter() - t
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read().decode(errors="replace")
    if code != 0:
        tail = (err.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"segment failed (exit {code}): {tail}")
    return usage.ru_utime + usage.ru_stime, seconds


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, nargs="+", help="input volumes (default: an 880x880x12 phantom)")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per input and backend (default 3)")
    parser.add_argument("--backend", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"])
    args = parser.parse_args(argv)
    from spineseg import modelfile

    model = args.model or modelfile.default_model_path()
    if model is None:
        raise SystemExit("no bundled model in this installation; give --model DIR")
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        images = args.image
        if not images:
            import SimpleITK as sitk

            from spineseg.phantom import make_phantom

            images = [tmp / "phantom_880x880x12.nii.gz"]
            sitk.WriteImage(make_phantom(size=(880, 880, 12), spacing=(0.345, 0.345, 4.4), seed=0).image,
                            str(images[0]), True)
        for image in images:
            for backend in args.backend:
                plain, flipped = [], []
                for r in range(args.rounds):
                    plain.append(run_segment(image, tmp / "plain.nii.gz", Path(model), backend, False))
                    flipped.append(run_segment(image, tmp / "tta.nii.gz", Path(model), backend, True))
                    print(f"  {image.name} {backend} round {r + 1}: CPU/wall {plain[-1][0]:.1f}/{plain[-1][1]:.1f} s, "
                          f"--tta {flipped[-1][0]:.1f}/{flipped[-1][1]:.1f} s", file=sys.stderr, flush=True)
                a, b = np.array(plain), np.array(flipped)
                rows.append((image.name, backend, f"{np.median(a[:, 0]):.1f}", f"{np.median(b[:, 0]):.1f}",
                             f"{np.median(b[:, 0] / a[:, 0]):.2f}", f"{np.median(a[:, 1]):.1f}",
                             f"{np.median(b[:, 1]):.1f}", f"{np.median(b[:, 1] / a[:, 1]):.2f}"))
    import torch

    print(f"\nspineseg segment on the CPU, {args.rounds} alternating rounds; model {model}; host "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"threads {torch.get_num_threads()}\n")
    print("| input | backend | CPU s | CPU s --tta | CPU ratio | wall s | wall s --tta | wall ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
