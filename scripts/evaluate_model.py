#!/usr/bin/env python3
"""Evaluate a model on labelled cases as users run it, on thin slices and on simulated thick slices.

Each case is segmented with the full inference path (N4, in-plane resampling to the model's
spacing and back, sliding window) and scored at its own resolution. The thick-slice
condition averages groups of k consecutive slices (k = round(--thick-mm / slice spacing)),
labels each thick slice with its central thin slice, and segments that volume: the target
domain's 4.4 mm slices simulated from thin-slice data.

    python scripts/evaluate_model.py Resources/Models/spineseg-default ../shared/data/spider-t2space \\
        -o runs/eval-default            # cases: the model's own validation cases (model.json)

Prints a table (mean foreground DSC, per class, spine union) and writes a report per condition
(``thin/``, ``thick/``: metrics.csv/json, report.md, overlays) plus ``summary.json``; ``--record``
also stores the results in the model's ``model.json`` (``metrics.heldout``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spineseg.errors import InputError  # noqa: E402
from spineseg.geometry import CanonicalFrame  # noqa: E402
from spineseg.modelfile import ModelHeader, read_header  # noqa: E402
from spineseg.training.data import find_cases, read_case  # noqa: E402
from spineseg.training.sampling import thick_slice_images  # noqa: E402


def thick_version(image: sitk.Image, label: sitk.Image, thick_mm: float) -> Tuple[sitk.Image, sitk.Image, int]:
    """(image, label, k): slices averaged in groups of k, on an axis-aligned grid in the canonical layout."""
    k = max(1, int(round(thick_mm / CanonicalFrame.of(image, warn=False).canonical_spacing[0])))
    thick_image, thick_label = thick_slice_images(image, label, k)
    return thick_image, thick_label, k


def canonical(image: sitk.Image) -> np.ndarray:
    return CanonicalFrame.of(image, warn=False).to_canonical(sitk.GetArrayFromImage(image))


def heldout_cases(model: Path, data: Path,
                  cases: Optional[Sequence[str]]) -> Tuple[ModelHeader, List[str], Dict[str, Any]]:
    """(model header, the case ids to score, id -> case of ``data``): ``cases``, else the model's validation cases."""
    header = read_header(model)
    wanted = list(cases) if cases else list(header.training.get("validation_cases") or [])
    if not wanted:
        raise InputError(f"{model}: the model records no validation cases; pass --cases ID ...")
    available = {c.id: c for c in find_cases(data)}
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(f"{data}: cases {', '.join(missing)} not found; check --cases or the data folder")
    return header, wanted, available


def evaluate(model: Path, data: Path, out: Path, *, cases: Optional[Sequence[str]], thick_mm: float,
             backend: str, overwrite: bool, record: bool = False) -> Dict[str, Any]:
    from spineseg.inference import InferenceOptions, load, segment_image
    from spineseg.metrics import case_metrics, pool_metrics
    from spineseg.report import write_evaluation_report

    if (out / "summary.json").exists() and not overwrite:
        raise InputError(f"{out}: already holds an evaluation; pass --overwrite or choose another folder")
    header, wanted, available = heldout_cases(model, data, cases)
    classes = list(header.classes)
    trained_on = set(header.training.get("train_cases") or [])
    leaked = sorted(set(wanted) & trained_on)
    options = InferenceOptions(device="cpu", backend=backend)
    net = load(model, options)
    values = [0] + [c.value for c in classes]
    results: Dict[str, Dict[str, Any]] = {"thin": {}, "thick": {}}
    keep: Dict[str, Dict[str, Any]] = {"thin": {}, "thick": {}}
    seconds: Dict[str, List[float]] = {"thin": [], "thick": []}
    ks = set()
    for cid in wanted:
        image, label, _ = read_case(available[cid], values[1:])
        thick_img, thick_lab, k = thick_version(image, label, thick_mm)
        ks.add(k)
        for cond, (img, lab) in (("thin", (image, label)), ("thick", (thick_img, thick_lab))):
            t0 = time.perf_counter()
            res = segment_image(img, net, options=options)
            seconds[cond].append(time.perf_counter() - t0)
            pred, gt = canonical(res.label), canonical(lab)
            results[cond][cid] = case_metrics(pred, gt, classes)
            keep[cond][cid] = (canonical(img), gt, pred, CanonicalFrame.of(img, warn=False).canonical_spacing)
            print(f"{cid} {cond}: mean DSC {results[cond][cid]['mean_dsc']:.3f} ({seconds[cond][-1]:.1f} s)",
                  file=sys.stderr, flush=True)
    summary: Dict[str, Any] = {"model": str(model), "model_name": header.name, "data": str(data),
                               "cases": wanted, "thick_mm": thick_mm, "k": sorted(ks),
                               "cases_seen_in_training": leaked, "backend": backend, "conditions": {}}
    for cond in ("thin", "thick"):
        pooled = pool_metrics(results[cond], classes)
        row = {"mean_dsc": pooled["mean_dsc"], "union_dsc": pooled["union"]["mean"]["dsc"],
               "per_class_dsc": {c.name: pooled["classes"][c.name]["mean"]["dsc"] for c in classes},
               "per_class_dsc_std": {c.name: pooled["classes"][c.name]["std"]["dsc"] for c in classes},
               "ppv": pooled["class_mean"]["mean"]["ppv"], "sensitivity": pooled["class_mean"]["mean"]["sensitivity"],
               "seconds_per_case": float(np.mean(seconds[cond]))}
        summary["conditions"][cond] = row
        title = (f"{header.name} on {len(wanted)} held-out cases, "
                 + ("thin slices as stored" if cond == "thin" else f"slices averaged to ~{thick_mm:g} mm (k={sorted(ks)})"))
        write_evaluation_report(out / cond, results[cond], classes, overlays=lambda cid, c=cond: keep[c][cid],
                                title=title, overwrite=overwrite)
    from spineseg.io import write_bytes_atomic

    write_bytes_atomic((json.dumps(summary, indent=1) + "\n").encode(), out / "summary.json", overwrite=overwrite)
    if record:
        from spineseg.modelfile import HEADER_FILE

        header = read_header(model)  # again: only the metrics change
        header.metrics["heldout"] = {k: summary[k] for k in ("cases", "thick_mm", "k", "conditions")}
        header.metrics["heldout"]["command"] = "python scripts/evaluate_model.py MODEL DATA -o OUT --record"
        write_bytes_atomic(header.to_json().encode("utf-8"), Path(model) / HEADER_FILE, overwrite=True)
    return summary


def table(summary: Dict[str, Any]) -> str:
    names = list(summary["conditions"]["thin"]["per_class_dsc"])
    head = ["slices", "mean fg DSC"] + [f"{n} DSC" for n in names] + ["union DSC", "PPV", "sens.", "s/case"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cond, label in (("thin", "thin (as stored)"), ("thick", f"thick (~{summary['thick_mm']:g} mm)")):
        r = summary["conditions"][cond]
        cells = [label, f"{r['mean_dsc']:.3f}"] + [f"{r['per_class_dsc'][n]:.3f}" for n in names]
        cells += [f"{r['union_dsc']:.3f}", f"{r['ppv']:.3f}", f"{r['sensitivity']:.3f}", f"{r['seconds_per_case']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_case_arguments(p: argparse.ArgumentParser, output_help: str) -> None:
    """The model, data, output, case and thick-slice arguments every held-out evaluation script takes."""
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("data", type=Path, help="folder of <case>_image/<case>_label pairs")
    p.add_argument("-o", "--output", type=Path, required=True, help=output_help)
    p.add_argument("--cases", nargs="+", help="case ids (default: the model's validation cases)")
    p.add_argument("--thick-mm", type=float, default=4.4, help="simulated slice thickness (default 4.4)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(p, "report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in OUTPUT")
    p.add_argument("--record", action="store_true",
                   help="also store the results in the model's header (model.json: metrics.heldout)")
    args = p.parse_args(argv)
    try:
        summary = evaluate(args.model, args.data, args.output, cases=args.cases, thick_mm=args.thick_mm,
                           backend=args.backend, overwrite=args.overwrite, record=args.record)
    except InputError as exc:
        print(f"evaluate_model: error: {exc}", file=sys.stderr)
        return 2
    if summary["cases_seen_in_training"]:
        print(f"warning: {', '.join(summary['cases_seen_in_training'])} were training cases", file=sys.stderr)
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
