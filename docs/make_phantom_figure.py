"""Render the phantom next to a real SPIDER case at the same physical scale.

    .venv/bin/python docs/make_phantom_figure.py [--seed 0] [--case 005] [-o docs/images/phantom_vs_spider.png]

Top row: the middle sagittal slice of each (image, then label overlay); bottom row:
two more lateral slices of each, to compare how structures fade across slices.
Axes are in mm, so sizes and proportions can be compared directly. SPIDER data:
CC BY 4.0, van der Graaf et al., Scientific Data 11, 264 (2024).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from spineseg.geometry import CanonicalFrame  # noqa: E402
from spineseg.labels import SPINE_CLASSES  # noqa: E402
from spineseg.phantom import make_phantom  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT.parent / "shared" / "data" / "spider-t2space"


def canonical(image: sitk.Image, label: sitk.Image):
    frame = CanonicalFrame.of(image, warn=False)
    return (frame.to_canonical(sitk.GetArrayFromImage(image)).astype(np.float32),
            frame.to_canonical(sitk.GetArrayFromImage(label)), frame.canonical_spacing)


def show(ax, image, label, spacing, title, overlay):
    h, w = image.shape
    extent = [0, w * spacing[2], h * spacing[1], 0]
    lo, hi = np.percentile(image, [0.5, 99.5])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    if overlay:
        colours = [(0, 0, 0, 0)] + [tuple(c / 255 for c in cls.color) + (0.45,) for cls in SPINE_CLASSES]
        ax.imshow(label, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(SPINE_CLASSES) + 0.5,
                  extent=extent, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("anterior -> posterior (mm)", fontsize=8)
    ax.set_ylabel("superior -> inferior (mm)", fontsize=8)
    ax.tick_params(labelsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", default="005", help="SPIDER case number")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "phantom_vs_spider.png"))
    args = parser.parse_args()

    start, cpu = time.perf_counter(), time.process_time()
    ph = make_phantom(seed=args.seed)
    print(f"phantom (880x880x12, seed {args.seed}) generated in {time.perf_counter() - start:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU")
    p_img, p_lab, p_sp = canonical(ph.image, ph.label)
    s_img, s_lab, s_sp = canonical(sitk.ReadImage(str(SPIDER / f"spider_{args.case}_image.nii.gz")),
                                   sitk.ReadImage(str(SPIDER / f"spider_{args.case}_label.nii.gz")))

    fig, axes = plt.subplots(2, 4, figsize=(20, 11.5))
    pm, sm = p_img.shape[0] // 2, s_img.shape[0] // 2
    show(axes[0, 0], p_img[pm], p_lab[pm], p_sp, f"phantom seed {args.seed}, slice {pm}/{p_img.shape[0]}", False)
    show(axes[0, 1], p_img[pm], p_lab[pm], p_sp, "phantom labels", True)
    show(axes[0, 2], s_img[sm], s_lab[sm], s_sp, f"SPIDER {args.case}, slice {sm}/{s_img.shape[0]}", False)
    show(axes[0, 3], s_img[sm], s_lab[sm], s_sp, "SPIDER labels", True)
    # phantom slices about 13 and 22 mm from the middle; SPIDER covers less, so half-way out and its last slice
    s_last = s_img.shape[0] - 1
    for col, (mm, sk) in enumerate(((13.0, sm + (s_last - sm) // 2), (22.0, s_last))):
        pk = min(p_img.shape[0] - 1, pm + int(round(mm / p_sp[0])))
        show(axes[1, col], p_img[pk], p_lab[pk], p_sp, f"phantom slice {pk} (~{(pk - pm) * p_sp[0]:.0f} mm lateral)", True)
        show(axes[1, 2 + col], s_img[sk], s_lab[sk], s_sp, f"SPIDER slice {sk} (~{(sk - sm) * s_sp[0]:.0f} mm lateral)", True)
    for ax in axes.ravel():
        ax.set_xlim(0, 384)
        ax.set_ylim(384, 0)
    fig.suptitle("Synthetic phantom (left, 0.345x0.345x4.4 mm) vs SPIDER t2 SPACE (right, ~0.6x0.6x0.9 mm), "
                 "same physical scale. Labels: vertebra, disc, spinal canal. SPIDER: CC BY 4.0.", fontsize=11)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
