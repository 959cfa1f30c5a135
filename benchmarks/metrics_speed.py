"""Time spineseg.metrics.case_metrics against MONAI's metrics on one thick-slice volume.

Why this exists: the house rule prefers MONAI, and spineseg.metrics counts voxels
itself (one confusion matrix via np.bincount). This prints both timings and the
one-hot memory MONAI needs, on a 880x880x12 label map with 4 labels (the target
geometry), so the choice rests on a measurement. CPU only; run:

    .venv/bin/python benchmarks/metrics_speed.py [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _data(shape):
    rng = np.random.default_rng(0)
    gt = np.zeros(shape, np.uint8)
    h, w = shape[1], shape[2]
    gt[:, h // 8: 7 * h // 8, w // 3: w // 2] = 1
    for y in range(h // 8, 7 * h // 8, h // 10):
        gt[:, y: y + h // 40, w // 3: w // 2] = 2
    gt[:, :, w // 2 + 10: w // 2 + w // 20 + 10] = 3
    pred = np.where(rng.random(shape) < 0.97, gt, rng.integers(0, 4, shape).astype(np.uint8))
    return pred, gt


def _measure(method: str, shape, repeats: int, threads: int) -> dict:
    """Run one method in this (fresh) process: median time and peak RSS growth over the data alone."""
    import torch
    from monai.metrics import compute_confusion_matrix_metric, compute_dice, get_confusion_matrix

    from spineseg.labels import SPINE_CLASSES
    from spineseg.metrics import case_metrics

    torch.set_num_threads(threads)
    pred, gt = _data(shape)

    def ours():
        r = case_metrics(pred, gt, SPINE_CLASSES)
        return [r["classes"][c.name]["dsc"] for c in SPINE_CLASSES]

    def monai():
        def onehot(a):
            return torch.nn.functional.one_hot(torch.from_numpy(a).long(), 4).permute(3, 0, 1, 2)[None].float()

        p, g = onehot(pred), onehot(gt)
        dice = compute_dice(p, g, include_background=False)
        cm = get_confusion_matrix(p, g, include_background=False)
        compute_confusion_matrix_metric("precision", cm)
        compute_confusion_matrix_metric("sensitivity", cm)
        return [float(v) for v in dice[0]]

    fn = ours if method == "ours" else monai
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dsc = fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": _median_time(fn, repeats), "peak_mb": (peak - base) / 1024.0, "dsc": dsc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(12, 880, 880), metavar=("D", "H", "W"))
    parser.add_argument("--child", choices=("ours", "monai"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(args.shape)
    if args.child:
        print(json.dumps(_measure(args.child, shape, args.repeats, args.threads)))
        return
    res = {}
    for method in ("ours", "monai"):  # separate processes, so peak memory is each method's own
        cmd = [sys.executable, __file__, "--child", method, "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--shape", *map(str, shape)]
        res[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    agree = max(abs(a - b) for a, b in zip(res["ours"]["dsc"], res["monai"]["dsc"]))
    print(f"volume {'x'.join(map(str, shape))} (D,H,W), 4 labels, {args.threads} torch threads, "
          f"median of {args.repeats} runs; max |DSC difference| {agree:.2e}")
    print(f"| {'method':<44} | {'seconds':>8} | {'peak RSS growth (MB)':>20} |")
    print(f"| {'-' * 44} | {'-' * 8} | {'-' * 20} |")
    names = {"ours": "spineseg.metrics.case_metrics (bincount)", "monai": "MONAI one-hot + dice + confusion metrics"}
    for method in ("ours", "monai"):
        print(f"| {names[method]:<44} | {res[method]['seconds']:8.3f} | {res[method]['peak_mb']:20.0f} |")


if __name__ == "__main__":
    main()
