"""``spineseg evaluate PRED GT -o REPORT``: compare predicted label maps with ground truth.

PRED and GT are two label files (one case) or two folders, matched by case name
(:mod:`spineseg.evaluation`, which does the work). Cases found on only one side are
listed in a warning and left out; a failed run leaves no partial report.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Dict

from spineseg.errors import InputError
from spineseg.evaluation import (
    check_report_dir,
    evaluate_folder,
    index_folder,
    match_cases,
    overlay_source,
    parse_classes,
    some_names,
    write_report,
)
from spineseg.io import refuse_input_as_output
from spineseg.metrics import lookup, pool_metrics, structure_rows
from spineseg.progress import Reporter

NAME = "evaluate"
HELP = "Compare predicted label maps with ground truth: DSC, PPV, sensitivity, confusion matrix, report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Cases in folders are matched by name: the file name without its extension, without one "
                     "trailing _seg, _pred or _label, then without a trailing _image (case7_image_seg.nii.gz, "
                     "case7_pred.nrrd, case7_label.nii.gz and case7.mha are all case7). Files named <case>_image.* "
                     "in PRED or GT are skipped as images. Exit 0 ok, 2 bad input (nothing written).")
    parser.add_argument("pred", metavar="PRED", help="predicted label map, or a folder of them")
    parser.add_argument("gt", metavar="GT", help="ground-truth label map, or a folder of them (a training-data folder works)")
    parser.add_argument("-o", "--output", required=True, metavar="REPORT", help="report folder to write")
    parser.add_argument("--classes", default="multiclass", metavar="SPEC",
                        help="'multiclass' (default: 1 vertebra, 2 intervertebral disc, 3 spinal canal), "
                             "'binary' (any non-zero label is 'spine', in both maps), or VALUE=NAME pairs "
                             "such as '1=vertebra,2=disc'")
    parser.add_argument("--images", metavar="DIR",
                        help="image file or folder (<case>_image.* or <case>.*) to draw the best/worst overlays on")
    parser.add_argument("--title", default="", help="report title")
    parser.add_argument("--json", action="store_true", help="print progress and the result as JSON lines on stdout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in REPORT")


def run(args: argparse.Namespace) -> int:
    reporter = Reporter(json_mode=args.json, label="evaluate")
    try:
        return _run(args, reporter)
    finally:
        reporter.close()


def _run(args: argparse.Namespace, reporter) -> int:
    classes, binary = parse_classes(args.classes)
    out = Path(args.output)
    refuse_input_as_output([out], [args.pred, args.gt, args.images])
    check_report_dir(out, args.overwrite)
    pairs, pred_only, gt_only = match_cases(Path(args.pred), Path(args.gt))
    images: Dict[str, Path] = {}
    if args.images:
        img = Path(args.images)
        if not img.exists():
            raise InputError(f"{img}: --images not found; give the folder of <case>_image.* files")
        images = index_folder(img, "image", images=True) if img.is_dir() else {next(iter(pairs)): img}
    notes = []
    if pred_only:
        notes.append(f"{len(pred_only)} prediction(s) without ground truth, not evaluated: {some_names(pred_only, 8)}")
    if gt_only:
        notes.append(f"{len(gt_only)} ground-truth case(s) without a prediction, not evaluated: {some_names(gt_only, 8)}")
    for n in notes:
        warnings.warn(n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="volume is near-isotropic")
        cases = evaluate_folder(pairs, classes, binary, args.classes, progress=lambda f, m: reporter(0.9 * f, m))
    extra = {"pred": str(args.pred), "gt": str(args.gt), "pairs": {c: [str(p), str(g)] for c, (p, g) in pairs.items()}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="volume is near-isotropic")
        report = write_report(out, cases, classes, overlay_source(pairs, images, classes, binary), args.title, notes,
                        args.overwrite, extra)
    reporter(1.0, "report written")
    pooled = pool_metrics(cases, classes)
    rows = structure_rows(classes)
    if args.json:
        summary = {label: {m: lookup(pooled, key)["mean"][m] for m in ("dsc", "ppv", "sensitivity")}  # type: ignore[index]
                   for key, label in rows}
        reporter.event("done", report=str(report), cases=len(cases), mean_dsc=pooled["mean_dsc"], structures=summary)
    else:
        print(f"{len(cases)} cases evaluated; report: {report}")
        for key, label in rows:
            s = lookup(pooled, key)
            print(f"  {label:<24} DSC {s['mean']['dsc']:.3f}  PPV {s['mean']['ppv']:.3f}  "  # type: ignore[index]
                  f"sensitivity {s['mean']['sensitivity']:.3f}")  # type: ignore[index]
    sys.stdout.flush()
    return 0
