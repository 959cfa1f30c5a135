#!/usr/bin/env python3
"""Per-level read-out on SPIDER: instance counts against the ground truth's components, disc matching.

    python scripts/levels_agreement.py ../shared/data/spider-t2space [--model Resources/Models/spineseg-default]
        [--cases 005 018 ...] [--conditions thick thin] [--thick-mm 4.4] [--backend onnx] [--cache DIR]

The shared SPIDER labels have three classes and no level names, so the ground truth
of an instance count is the connected components of the label map: discs (the disc
class's components; specks under 40 mm^3 left out) and vertebral bodies (components of the
vertebra class anterior to the canal, at least 10% of the median of the five largest: the
labels often cut the posterior elements loose, so whole-vertebra components over-count).
For each case the read-out runs

- on the ground-truth label map: its instance counts against those components;
- on the model's segmentation (thin slices as stored, and slices averaged to ~4.4 mm):
  each ground-truth disc is matched to the predicted disc instances overlapping it
  (at least 10% of its voxels); "one" means exactly one, and that instance overlaps no
  other ground-truth disc. Names are compared with the read-out of the ground truth.

Prints one table row per case and condition, then the totals.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spineseg.geometry import CanonicalFrame  # noqa: E402
from spineseg.labels import CANAL, DISC, VERTEBRA  # noqa: E402
from spineseg.levels import read_levels  # noqa: E402
from spineseg.levels.instances import MIN_DISC_MM3, anterior_region, canal_front, components  # noqa: E402
from spineseg.training.data import find_cases, read_case  # noqa: E402
from spineseg.training.sampling import thick_slice_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OVERLAP = 0.10
BODY_FRACTION = 0.10


def canonical(image: sitk.Image) -> np.ndarray:
    return CanonicalFrame.of(image, warn=False).to_canonical(sitk.GetArrayFromImage(image))


def gt_components(label: sitk.Image) -> Dict[str, object]:
    """Ground-truth disc components (label array) and the number of vertebral-body components."""
    arr = canonical(label)
    spacing = CanonicalFrame.of(label, warn=False).canonical_spacing
    voxel = float(np.prod(spacing))
    discs, n = components(arr == DISC.value, spacing, full=True)
    sizes = np.bincount(discs.ravel(), minlength=n + 1)[1:] * voxel
    keep = [i + 1 for i in range(n) if sizes[i] >= MIN_DISC_MM3]
    discs = np.where(np.isin(discs, keep), discs, 0)
    front = canal_front(arr == CANAL.value, spacing)
    body_region = (arr == VERTEBRA.value) & anterior_region(arr.shape, spacing, front)
    verts, m = components(body_region, spacing, full=True)
    vsizes = np.sort(np.bincount(verts.ravel(), minlength=m + 1)[1:])[::-1]
    bodies = int((vsizes >= BODY_FRACTION * float(np.median(vsizes[:5]))).sum()) if m else 0
    return {"discs": discs, "disc_ids": keep, "bodies": bodies}


def match_discs(gt: Dict[str, object], levels: np.ndarray) -> Dict[str, object]:
    """Each GT disc's predicted disc instances (per-level values 100..199)."""
    discs = gt["discs"]
    pred_disc = (levels > 100) & (levels < 200)
    owners: Dict[int, List[int]] = {}
    for g in gt["disc_ids"]:
        m = discs == g
        vals, counts = np.unique(levels[m & pred_disc], return_counts=True)
        owners[g] = [int(v) for v, c in zip(vals, counts) if c >= OVERLAP * m.sum()]
    claimed: Dict[int, int] = {}
    for g, vs in owners.items():
        for v in vs:
            claimed[v] = claimed.get(v, 0) + 1
    one = sum(1 for vs in owners.values() if len(vs) == 1 and claimed[vs[0]] == 1)
    missed = sum(1 for vs in owners.values() if not vs)
    pred_values = set(int(v) for v in np.unique(levels[pred_disc]))
    touched = set(v for vs in owners.values() for v in vs)
    return {"one": one, "missed": missed, "extra": len(pred_values - touched), "owners": owners}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--model", type=Path, default=ROOT / "Resources" / "Models" / "spineseg-default")
    p.add_argument("--cases", nargs="+", help="case ids (default: all)")
    p.add_argument("--thick-mm", type=float, default=4.4)
    p.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    p.add_argument("--conditions", nargs="+", choices=("thin", "thick"), default=["thin", "thick"],
                   help="which slice conditions, in this order (default thin thick)")
    p.add_argument("--cache", type=Path, help="folder to keep the segmentations in and reuse them from")
    args = p.parse_args(argv)
    from spineseg.inference import InferenceOptions, load, segment_image
    from spineseg.modelfile import read_header

    header = read_header(args.model)
    held_out = set(header.training.get("validation_cases") or [])
    options = InferenceOptions(device="cpu", backend=args.backend)
    net = load(args.model, options)
    cases = [c for c in find_cases(args.data) if not args.cases or c.id in args.cases
             or c.id.split("_")[-1] in args.cases]
    head = ["case", "held out", "slices", "GT discs", "GT bodies", "discs on GT", "vertebrae on GT",
            "pred discs", "GT discs matched to one", "missed", "extra", "names as on GT", "reliable"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    totals: Dict[str, Dict[str, int]] = {}
    for case in cases:
        image, label, _ = read_case(case, [1, 2, 3])
        k = max(1, int(round(args.thick_mm / CanonicalFrame.of(image, warn=False).canonical_spacing[0])))
        for cond in args.conditions:
            img, lab = (image, label) if cond == "thin" else thick_slice_images(image, label, k)
            gt = gt_components(lab)
            on_gt = read_levels(lab)
            gt_levels = on_gt.canonical_labels
            cached = args.cache / f"{case.id}_{cond}_seg.nii.gz" if args.cache else None
            if cached is not None and cached.is_file():
                seg = sitk.ReadImage(str(cached))
            else:
                seg = segment_image(img, net, options=options).label
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    sitk.WriteImage(seg, str(cached))
            pred = read_levels(seg)
            m = match_discs(gt, pred.canonical_labels)
            ref = match_discs(gt, gt_levels)
            same = sum(1 for g, vs in m["owners"].items()
                       if len(vs) == 1 and len(ref["owners"][g]) == 1 and vs[0] == ref["owners"][g][0])
            n_gt = len(gt["disc_ids"])
            row = [case.id, "yes" if case.id in held_out else "no", cond, n_gt, gt["bodies"],
                   len(on_gt.names("disc")), len(on_gt.names("vertebra")), len(pred.names("disc")),
                   m["one"], m["missed"], m["extra"], same, "yes" if pred.levels_reliable else "no"]
            print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
            for key in (cond, f"{cond}, held out" if case.id in held_out else None):
                if key is None:
                    continue
                t = totals.setdefault(key, {"cases": 0, "gt_discs": 0, "disc_count_ok": 0, "body_count_ok": 0,
                                            "one": 0, "missed": 0, "extra": 0, "same": 0, "reliable": 0})
                t["cases"] += 1
                t["gt_discs"] += n_gt
                t["disc_count_ok"] += int(len(on_gt.names("disc")) == n_gt)
                t["body_count_ok"] += int(len(on_gt.names("vertebra")) == gt["bodies"])
                t["one"] += m["one"]
                t["missed"] += m["missed"]
                t["extra"] += m["extra"]
                t["same"] += same
                t["reliable"] += int(pred.levels_reliable)
    print()
    print("| condition | cases | disc count on GT = GT components | vertebra count on GT = GT bodies | GT discs | "
          "matched to exactly one predicted disc | missed | extra predicted discs | named as on GT | reliable |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, t in totals.items():
        print(f"| {key} | {t['cases']} | {t['disc_count_ok']}/{t['cases']} | {t['body_count_ok']}/{t['cases']} | "
              f"{t['gt_discs']} | {t['one']} ({100.0 * t['one'] / max(1, t['gt_discs']):.1f}%) | {t['missed']} | "
              f"{t['extra']} | {t['same']} ({100.0 * t['same'] / max(1, t['gt_discs']):.1f}%) | "
              f"{t['reliable']}/{t['cases']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
