#!/usr/bin/env python3
"""Flip test-time augmentation on held-out cases: DSC with and without it, and how its uncertainty ranks cases.

The cases, the thick-slice simulation and the scoring are those of ``scripts/evaluate_model.py``
(the model's own validation cases, thin as stored and slices averaged to ~4.4 mm). Every case
is prepared once (N4, resampling) and predicted through the engine's ``predict_prepared`` once
per flip set; a network pass already run for the same volume is reused (a cache around the
backend), so the identity pass is computed once for all flip sets, and each set's labels are
exactly what ``spineseg segment`` gives with it.

    python scripts/evaluate_tta.py Resources/Models/spineseg-default ../shared/data/spider-t2space \\
        -o runs/eval-tta

Prints two tables: mean foreground DSC per flip set and condition, and, for the default flip
set, each case's uncertainty next to 1 - DSC with Spearman's rank correlation. Writes
``tta.json`` with every number.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_model import canonical, thick_version  # noqa: E402
from spineseg.errors import InputError  # noqa: E402
from spineseg.inference import tta  # noqa: E402

#: flip sets compared (name -> canonical axes flipped per pass; 0 = slices/left-right, 1 = superior-inferior,
#: 2 = anterior-posterior); "none" is plain inference
FLIP_SETS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    "none": ((),),
    "left-right": tta.DEFAULT_FLIPS,
    "left-right + in-plane": ((), (0,), (1,), (2,)),
}


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


def evaluate(model: Path, data: Path, *, cases: Optional[Sequence[str]], thick_mm: float,
             backend: str) -> Dict[str, Any]:
    from spineseg.inference import InferenceOptions, load
    from spineseg.inference.engine import label_values, predict_prepared, prepare_image
    from spineseg.metrics import case_metrics
    from spineseg.modelfile import read_header
    from spineseg.training.data import find_cases, read_case

    header = read_header(model)
    classes = list(header.classes)
    wanted = list(cases) if cases else list(header.training.get("validation_cases") or [])
    if not wanted:
        raise InputError(f"{model}: the model records no validation cases; pass --cases ID ...")
    available = {c.id: c for c in find_cases(data)}
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(f"{data}: cases {', '.join(missing)} not found; check --cases or the data folder")
    net = load(model, InferenceOptions(device="cpu", backend=backend))
    rows: List[Dict[str, Any]] = []
    for cid in wanted:
        image, label, _ = read_case(available[cid], [c.value for c in classes])
        thick_img, thick_lab, _ = thick_version(image, label, thick_mm)
        for cond, (img, lab) in (("thin", (image, label)), ("thick", (thick_img, thick_lab))):
            cache = PassCache(net)
            gt = canonical(lab)
            prepared = prepare_image(img, net.info, InferenceOptions(device="cpu", backend=backend))
            for name, flips in FLIP_SETS.items():
                t0 = time.perf_counter()
                options = InferenceOptions(device="cpu", backend=backend, tta=len(flips) > 1,
                                           tta_flips=flips if len(flips) > 1 else None)
                pred = predict_prepared(prepared, cache, options)
                labels, _ = label_values(pred.indices, net.info, options)
                dsc = case_metrics(labels, gt, classes)["mean_dsc"]
                rows.append({"case": cid, "condition": cond, "flips": name, "passes": len(flips),
                             "mean_dsc": dsc, "uncertainty": pred.uncertainty})
                print(f"{cid} {cond} {name}: mean DSC {dsc:.4f}"
                      + ("" if pred.uncertainty is None else f", uncertainty {pred.uncertainty:.4f}")
                      + f" ({time.perf_counter() - t0:.1f} s, {cache.computed} passes so far)",
                      file=sys.stderr, flush=True)
    return {"model": str(model), "data": str(data), "cases": wanted, "thick_mm": thick_mm, "backend": backend,
            "flip_sets": {k: [list(f) for f in v] for k, v in FLIP_SETS.items()}, "rows": rows}


def dsc_table(result: Dict[str, Any]) -> str:
    lines = ["| flips | passes | thin mean fg DSC | thick mean fg DSC |", "|---|---|---|---|"]
    for name, flips in FLIP_SETS.items():
        cells = [name, str(len(flips))]
        for cond in ("thin", "thick"):
            values = [r["mean_dsc"] for r in result["rows"] if r["flips"] == name and r["condition"] == cond]
            cells.append(f"{np.mean(values):.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def uncertainty_table(result: Dict[str, Any], flips: str = "left-right") -> str:
    lines = [f"| case | thin 1 - DSC | thin uncertainty | thick 1 - DSC | thick uncertainty |", "|---|---|---|---|---|"]
    by = {(r["case"], r["condition"]): r for r in result["rows"] if r["flips"] == flips}
    for cid in result["cases"]:
        cells = [cid]
        for cond in ("thin", "thick"):
            r = by[(cid, cond)]
            cells += [f"{1.0 - r['mean_dsc']:.4f}", f"{r['uncertainty']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["Spearman rho"]
    for cond in ("thin", "thick"):
        rs = [by[(cid, cond)] for cid in result["cases"]]
        cells += ["", f"{spearman([r['uncertainty'] for r in rs], [1.0 - r['mean_dsc'] for r in rs]):.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("data", type=Path, help="folder of <case>_image/<case>_label pairs")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for tta.json")
    p.add_argument("--cases", nargs="+", help="case ids (default: the model's validation cases)")
    p.add_argument("--thick-mm", type=float, default=4.4, help="simulated slice thickness (default 4.4)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier tta.json in OUTPUT")
    args = p.parse_args(argv)
    target = args.output / "tta.json"
    try:
        if target.exists() and not args.overwrite:
            raise InputError(f"{target}: already exists; pass --overwrite or choose another folder")
        result = evaluate(args.model, args.data, cases=args.cases, thick_mm=args.thick_mm, backend=args.backend)
    except InputError as exc:
        print(f"evaluate_tta: error: {exc}", file=sys.stderr)
        return 2
    from spineseg.io import write_bytes_atomic

    args.output.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic((json.dumps(result, indent=1) + "\n").encode(), target, overwrite=args.overwrite)
    print(dsc_table(result))
    print()
    print(uncertainty_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
