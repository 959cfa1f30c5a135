"""Cost of the training window pipeline on the CPU, with and without the scan augmentation.

    .venv/bin/python benchmarks/augmentation.py [--windows 200] [--threads 1]

One in-memory thin-slice case (27 x 300 x 260 voxels, 0.9 mm slices, as SPIDER at 1.2 mm in-plane),
the default preset with half of the windows thick (``--thick-prob 0.5``), 12x128x128 windows: the
milliseconds per window (crop, thick-slice simulation, flips, intensity and scan changes, target
lookup) that the training loop's data loading costs. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the loader's worker uses one)")
    args = ap.parse_args(argv)

    import torch

    from spineseg.training.data import CachedCase
    from spineseg.training.presets import preset_config
    from spineseg.training.sampling import WindowDataset

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(27, 300, 260)).astype(np.float32)
    label = (rng.random(image.shape) > 0.7).astype(np.uint8)
    points = np.argwhere(label[:, ::8, ::8] > 0) * np.array([1, 8, 8])

    class Memory(CachedCase):
        def image(self, mmap: bool = True) -> np.ndarray:
            return image

        def label(self, mmap: bool = True) -> np.ndarray:
            return label

        def foreground(self) -> np.ndarray:
            return points

    case = Memory("c", Path("."), image.shape, (0.9, 1.2, 1.2), [1])
    print(f"| scan augmentation | ms per window ({args.windows} windows, {args.threads} thread) |")
    print("|---|---:|")
    for scan in (False, True):
        cfg = preset_config("default", thick_prob=0.5, scan_aug=scan, windows_per_case=args.windows)
        ds = WindowDataset({"c": case}, cfg, [1, 2, 3])
        ds.set_epoch(0)
        ds[0]  # imports, MONAI transforms built
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        print(f"| {'on' if scan else 'off'} | {(time.perf_counter() - t) / len(ds) * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
