#!/usr/bin/env python3
"""Flip test-time augmentation and the review flag on held-out cases: DSC with and without TTA, how its uncertainty ranks cases, which cases are flagged.

The cases, the thick-slice simulation and the scoring are those of ``scripts/evaluate_model.py``
(the model's own validation cases, thin as stored and slices averaged to ~4.4 mm). Every case
is prepared once (N4, resampling) and predicted through the engine's ``predict_prepared`` once
per flip set; a network pass already run for the same volume is reused (a cache around the
backend), so the identity pass is computed once for all flip sets, and each set's labels are
exactly what ``spineseg segment`` gives with it.

    python scripts/evaluate_tta.py Resources/Models/spineseg-default ../shared/data/spider-t2space \\
        -o runs/eval-tta

For the default flip set each case also gets the per-level read-out and its review block
(:func:`spineseg.levels.review.review_case`), as ``spineseg segment --levels`` computes them.
Prints two tables: mean foreground DSC per flip set and condition, and, for the default flip
set, each case's 1 - DSC, uncertainty and review flag with Spearman's rank correlation of the
uncertainty against 1 - DSC. ``tta.json`` holds every number and is rewritten after each case,
so an interrupted run keeps what it finished (the tables say how many cases they cover).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_model import add_case_arguments, canonical, heldout_cases, thick_version  # noqa: E402
from spineseg.errors import InputError  # noqa: E402
from spineseg.inference import tta  # noqa: E402

#: flip sets compared (name -> canonical axes flipped per pass; 0 = slices/left-right, 1 = superior-inferior,
#: 2 = anterior-posterior); "none" is plain inference
FLIP_SETS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    "none": ((),),
    "left-right": tta.DEFAULT_FLIPS,
    "left-right + in-plane": ((), (0,), (1,), (2,)),
}
#: the flip set whose uncertainty feeds the review flag (what ``segment --tta`` runs)
REVIEWED = "left-right"
CONDITIONS = ("thin", "thick")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); NaN when either side is constant."""
    def ranks(values: Sequence[float]) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64)
        order = np.argsort(a, kind="mergesort")
        r = np.empty(len(a), dtype=np.float64)
        r[order] = np.arange(1, len(a) + 1)
        _, inverse = np.unique(a, return_inverse=True)
        return (np.bincount(inverse, r) / np.bincount(inverse))[inverse]

    rx, ry = ranks(x), ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


class PassCache:
    """The backend, with each (volume, settings) pass computed once; always keeps the probabilities."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.info, self.name, self.device = backend.info, backend.name, backend.device
        self.memo: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.computed = 0

    def predict_volume(self, volume: np.ndarray, *, want_probabilities: bool = False, progress=None,
                       cancel=None, **settings):
        key = hashlib.sha1(np.ascontiguousarray(volume).tobytes()).hexdigest() + repr(sorted(settings.items()))
        if key not in self.memo:
            self.memo[key] = self.backend.predict_volume(volume, want_probabilities=True, progress=progress,
                                                         cancel=cancel, **settings)
            self.computed += 1
        indices, probs = self.memo[key]
        return indices, (probs if want_probabilities else None)


def evaluate(model: Path, data: Path, *, cases: Optional[Sequence[str]], thick_mm: float, backend: str,
             flip_sets: Sequence[str] = tuple(FLIP_SETS), conditions: Sequence[str] = CONDITIONS,
             save: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    from spineseg.inference import InferenceOptions, load
    from spineseg.inference.engine import label_values, predict_prepared, prepare_image
    from spineseg.levels import read_levels_canonical
    from spineseg.levels.review import review_case
    from spineseg.metrics import case_metrics
    from spineseg.training.data import read_case

    header, wanted, available = heldout_cases(model, data, cases)
    classes = list(header.classes)
    net = load(model, InferenceOptions(device="cpu", backend=backend))
    rows: List[Dict[str, Any]] = []
    result = {"model": str(model), "data": str(data), "cases": wanted, "thick_mm": thick_mm, "backend": backend,
              "flip_sets": {k: [list(f) for f in FLIP_SETS[k]] for k in flip_sets},
              "conditions": list(conditions), "rows": rows}
    for cid in wanted:
        image, label, _ = read_case(available[cid], [c.value for c in classes])
        versions = {"thin": (image, label)}
        if "thick" in conditions:
            versions["thick"] = thick_version(image, label, thick_mm)[:2]
        for cond in conditions:
            img, lab = versions[cond]
            cache = PassCache(net)
            gt = canonical(lab)
            prepared = prepare_image(img, net.info, InferenceOptions(device="cpu", backend=backend))
            for name in flip_sets:
                flips = FLIP_SETS[name]
                t0 = time.perf_counter()
                options = InferenceOptions(device="cpu", backend=backend, tta=len(flips) > 1,
                                           tta_flips=flips if len(flips) > 1 else None)
                pred = predict_prepared(prepared, cache, options)
                labels, _ = label_values(pred.indices, net.info, options)
                dsc = case_metrics(labels, gt, classes)["mean_dsc"]
                row = {"case": cid, "condition": cond, "flips": name, "passes": len(flips),
                       "mean_dsc": dsc, "uncertainty": pred.uncertainty}
                if name == REVIEWED:
                    levels = read_levels_canonical(labels, prepared.frame)
                    verdict = review_case(levels, prepared.frame.image_from_canonical(labels), pred.uncertainty)
                    row["review"] = verdict.to_dict()
                rows.append(row)
                print(f"{cid} {cond} {name}: mean DSC {dsc:.4f}"
                      + ("" if pred.uncertainty is None else f", uncertainty {pred.uncertainty:.4f}")
                      + f" ({time.perf_counter() - t0:.1f} s, {cache.computed} passes so far)",
                      file=sys.stderr, flush=True)
            if save is not None:
                save(result)
    return result


def dsc_table(result: Dict[str, Any]) -> str:
    """Mean foreground DSC per flip set and condition, over the cases done in both."""
    conds = result["conditions"]
    lines = ["| flips | passes | " + " | ".join(f"{c} mean fg DSC (cases)" for c in conds) + " |",
             "|---|---|" + "---|" * len(conds)]
    for name in result["flip_sets"]:
        cells = [name, str(len(result["flip_sets"][name]))]
        for cond in conds:
            values = [r["mean_dsc"] for r in result["rows"] if r["flips"] == name and r["condition"] == cond]
            cells.append(f"{np.mean(values):.4f} ({len(values)})" if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def review_table(result: Dict[str, Any]) -> str:
    """Per case and condition: 1 - DSC, uncertainty, flag and reasons; Spearman per condition."""
    lines = ["| case | slices | 1 - DSC | uncertainty | flagged | reasons |", "|---|---|---|---|---|---|"]
    rows = [r for r in result["rows"] if r["flips"] == REVIEWED]
    for r in rows:
        review = r["review"]
        lines.append(f"| {r['case']} | {r['condition']} | {1.0 - r['mean_dsc']:.3f} | {r['uncertainty']:.3f} | "
                     f"{'yes' if review['flag'] else 'no'} | {'; '.join(review['reasons']) or '-'} |")
    for cond in result["conditions"]:
        rs = [r for r in rows if r["condition"] == cond]
        rho = spearman([r["uncertainty"] for r in rs], [1.0 - r["mean_dsc"] for r in rs])
        flagged = sum(1 for r in rs if r["review"]["flag"])
        lines.append(f"| Spearman rho ({cond}, {len(rs)} cases) | | | {rho:.2f} | {flagged} of {len(rs)} | |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(p, "folder for tta.json")
    p.add_argument("--flip-sets", nargs="+", choices=tuple(FLIP_SETS), default=list(FLIP_SETS),
                   help=f"flip sets to compare (default all; {REVIEWED!r} is the one reviewed)")
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS),
                   help="thin (as stored) and/or thick (slices averaged); default both")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier tta.json in OUTPUT")
    args = p.parse_args(argv)
    target = args.output / "tta.json"
    if REVIEWED not in args.flip_sets:
        args.flip_sets.append(REVIEWED)
    from spineseg.io import write_bytes_atomic

    def save(result: Dict[str, Any]) -> None:
        args.output.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic((json.dumps(result, indent=1) + "\n").encode(), target, overwrite=True)

    try:
        if target.exists() and not args.overwrite:
            raise InputError(f"{target}: already exists; pass --overwrite or choose another folder")
        result = evaluate(args.model, args.data, cases=args.cases, thick_mm=args.thick_mm, backend=args.backend,
                          flip_sets=args.flip_sets, conditions=args.conditions, save=save)
    except InputError as exc:
        print(f"evaluate_tta: error: {exc}", file=sys.stderr)
        return 2
    print(tables(result))
    return 0


def tables(result: Dict[str, Any]) -> str:
    return dsc_table(result) + "\n\n" + review_table(result)


if __name__ == "__main__":
    sys.exit(main())
