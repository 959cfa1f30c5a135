"""Show each scan augmentation of the default preset on one real training window.

    .venv/bin/python docs/make_augmentation_figure.py [-o docs/images/augmentation.png]

The window comes from the bundled sample (SPIDER ``spider_018``, CC BY 4.0, van der Graaf et al.,
Scientific Data 11, 264 (2024)), preprocessed as training sees it (N4, z-score, 1.2 mm in-plane).
Each panel applies one change with its strongest setting (the thick slices: 6 mm) so that it is
visible; in training each is drawn at random. Left of each pair: the sagittal slice at the
window's centre; right: a cut across the slices (anterior-posterior x slice axis, in mm), where
the slice thickness shows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spineseg.preprocessing import PreprocessingConfig  # noqa: E402
from spineseg.samples import SAMPLE_CASE, bundled_sample  # noqa: E402
from spineseg.training import augment as A  # noqa: E402
from spineseg.training.data import Case, cache_case  # noqa: E402
from spineseg.training.sampling import thicken  # noqa: E402

INPLANE_MM = 1.2


def strongest() -> dict:
    """The scan transforms with each range narrowed to its strong end."""
    return A.build_transforms(lowres_zoom=(A.LOWRES_ZOOM[0],) * 2, blur_sigma=(A.BLUR_SIGMA[1],) * 2,
                              bias_coeff=(A.BIAS_COEFF[1],) * 2, contrast=(A.CONTRAST[0],) * 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "augmentation.png"))
    args = parser.parse_args(argv)
    sample = bundled_sample()
    if sample is None:
        print("the bundled sample is missing (Resources/Samples)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        cached = cache_case(Case(SAMPLE_CASE, sample[0], sample[1]), PreprocessingConfig().to_dict(), Path(tmp),
                            [1, 2, 3], inplane_mm=INPLANE_MM)
        image = np.array(cached.image(), dtype=np.float32)
        spacing = cached.spacing
    d, h, w = image.shape
    zc, yc, xc = d // 2, h // 2, w // 2
    win = image[:, max(0, yc - 64):yc + 64, max(0, xc - 64):xc + 64]
    thin_mm = float(spacing[0])
    k = max(2, int(round(A.THICK_MM[1] / thin_mm)))
    panels = [("original (thin, %.1f mm)" % thin_mm, win, thin_mm)]
    for profile in A.SLICE_PROFILES:
        thick, _ = thicken(win, None, k, 0, weights=A.slice_weights(k, profile))
        panels.append((f"{k * thin_mm:.1f} mm slices, {profile} profile", thick, k * thin_mm))
    strong = strongest()
    one = {name: A.apply(name, win, np.random.default_rng(3), strong) for name in ("lowres", "blur", "bias", "contrast")}
    panels += [
        (f"in-plane resolution loss (x{A.LOWRES_ZOOM[0]:g})", one["lowres"], thin_mm),
        (f"in-plane blur (sigma {A.BLUR_SIGMA[1]:g} voxel)", one["blur"], thin_mm),
        (f"bias field (degree 3, coefficients {A.BIAS_COEFF[1]:g})", one["bias"], thin_mm),
        (f"contrast x{A.CONTRAST[0]:g} about the mean", one["contrast"], thin_mm),
        ("tissue inversion (T1-like)", A.invert(win), thin_mm),
    ]
    rng = np.random.default_rng(11)
    chain = win
    for name in ("lowres", "blur", "bias", "contrast"):
        chain = A.apply(name, chain, rng, strong)
    chain = chain + rng.normal(0, 0.1, win.shape).astype(np.float32)
    panels.append(("all of them, plus noise (sigma 0.1)", chain, thin_mm))
    lo, hi = np.percentile(win, [1, 99.5])
    n = len(panels)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.6 * rows),
                             gridspec_kw={"width_ratios": [3, 1] * cols})
    for ax in axes.ravel():
        ax.axis("off")
    for i, (title, arr, slice_mm) in enumerate(panels):
        r, c = divmod(i, cols)
        a_in, a_cut = axes[r, 2 * c], axes[r, 2 * c + 1]
        a_in.imshow(arr[arr.shape[0] // 2], cmap="gray", vmin=lo, vmax=hi,
                    extent=(0, arr.shape[2] * spacing[2], arr.shape[1] * spacing[1], 0))
        a_in.set_title(title, fontsize=8)
        cut = arr[:, arr.shape[1] // 2, :].T  # (W, D): anterior-posterior down, slices across
        a_cut.imshow(cut, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
                     extent=(0, arr.shape[0] * slice_mm, arr.shape[2] * spacing[2], 0))
        a_cut.set_title("across slices", fontsize=7)
    fig.suptitle(f"Scan augmentation on a training window of {SAMPLE_CASE} (1.2 mm in-plane; "
                 "each change at its strongest; training draws them at random)", fontsize=9)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
