"""Draw how the per-level measurements are taken, on a phantom's mid-sagittal slice.

    .venv/bin/python docs/make_levels_figure.py [--seed 0] [-o docs/images/levels_measurements.png]

Left: the per-level label map with each structure's name. Right: L3 and the L3-L4 disc
close up, with the lines each measurement is taken along (AP depth, anterior / middle /
posterior heights at 15 / 50 / 85% of the AP chord, canal AP diameter), all drawn by the
same functions the read-out measures with (spineseg.levels.measure).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spineseg.geometry import CanonicalFrame  # noqa: E402
from spineseg.levels import read_levels  # noqa: E402
from spineseg.levels.measure import HEIGHT_POSITIONS, chord, largest_piece, mid_sagittal_slices, profile_frame  # noqa: E402
from spineseg.levels.segments import segment_colours  # noqa: E402
from spineseg.phantom import make_phantom  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def lines_for(mask2d, canal2d, sp, tangent2d, with_depth):
    """(label, p0, p1) in-plane mm segments of one structure's measurements."""
    c, t, n = profile_frame(mask2d, sp, tangent2d)
    out = []
    ap = chord(mask2d, sp, c, n)
    if with_depth:
        out.append(("AP depth", c + ap[0] * n, c + ap[1] * n))
    for key, f in HEIGHT_POSITIONS.items():
        p = c + (ap[0] + f * (ap[1] - ap[0])) * n
        h = chord(mask2d, sp, p, t)
        out.append((f"{key} height", p + h[0] * t, p + h[1] * t))
    # canal: first canal run posterior to the centroid along n
    x = np.arange(0, 80, 0.05)
    pts = c[None] + x[:, None] * n[None]
    idx = np.rint(pts / np.asarray(sp)).astype(int)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < canal2d.shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < canal2d.shape[1])
    hit = np.where(ok)[0][canal2d[idx[ok, 0], idx[ok, 1]]]
    if hit.size:
        q = c + x[hit[0]] * n
        r = chord(canal2d, sp, q, n)
        out.append(("canal AP", q + r[0] * n, q + r[1] * n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "levels_measurements.png"))
    args = ap.parse_args()
    ph = make_phantom(seed=args.seed, levels=False)
    result = read_levels(ph.label)
    frame = CanonicalFrame.of(ph.label, warn=False)
    lev = result.canonical_labels
    sp3 = frame.canonical_spacing
    sp = (sp3[1], sp3[2])
    colours = dict(zip([s.label for s in result.structures], segment_colours(result.structures)))
    l3 = result.structure("L3")
    disc = result.structure("L3-L4")
    d = mid_sagittal_slices(lev == l3.label, sp3)[0]
    rgb = np.ones(lev.shape[1:] + (3,))
    for value, colour in colours.items():
        rgb[lev[d] == value] = np.asarray(colour) / 255.0
    fig, axes = plt.subplots(1, 2, figsize=(12, 7.5), layout="constrained")
    h, w = lev.shape[1:]
    extent = [0, w * sp[1], h * sp[0], 0]
    for ax in axes:
        ax.imshow(rgb, extent=extent, interpolation="nearest")
        ax.set_xlabel("anterior -> posterior (mm)")
        ax.set_ylabel("superior -> inferior (mm)")
    for s in result.structures:
        if s.kind == "canal":
            continue
        m = largest_piece(lev[d] == s.label)
        if m.any():
            cy, cx = np.argwhere(m).mean(axis=0) * np.asarray(sp)
            axes[0].text(cx - (28 if s.kind == "disc" else 0), cy, s.name, fontsize=7, ha="center", va="center")
    axes[0].set_title(f"per-level labels, mid-sagittal slice (phantom seed {args.seed})", fontsize=10)
    canal = largest_piece(lev[d] == 201)
    styles = {"AP depth": "k", "anterior height": "tab:red", "middle height": "tab:green",
              "posterior height": "tab:purple", "canal AP": "tab:orange"}
    seen = set()
    for s, with_depth in ((l3, True), (disc, False)):
        m = largest_piece(lev[d] == s.label)
        tangent = np.asarray(result_tangent(result, s, sp3))
        for label, p0, p1 in lines_for(m, canal, sp, tangent, with_depth):
            axes[1].plot([p0[1], p1[1]], [p0[0], p1[0]], color=styles[label], lw=2,
                         label=None if label in seen else label)
            seen.add(label)
    cy, cx = np.argwhere(largest_piece(lev[d] == l3.label)).mean(axis=0) * np.asarray(sp)
    axes[1].set_xlim(cx - 30, cx + 45)
    axes[1].set_ylim(cy + 42, cy - 22)
    axes[1].legend(loc="lower right", fontsize=8)
    axes[1].set_title("L3 and L3-L4: where each measurement is taken", fontsize=10)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=90)
    print(args.output)


def result_tangent(result, structure, spacing):
    """The spine's cranio-caudal direction at a structure (in-plane H, W): from its neighbours' centroids."""
    lev = result.canonical_labels
    names = [s for s in result.structures if s.kind != "canal"]
    i = names.index(structure)
    a, b = names[max(0, i - 1)], names[min(len(names) - 1, i + 1)]
    ca = np.argwhere(lev == a.label).mean(axis=0) * np.asarray(spacing)
    cb = np.argwhere(lev == b.label).mean(axis=0) * np.asarray(spacing)
    return (cb - ca)[1:]


if __name__ == "__main__":
    main()
