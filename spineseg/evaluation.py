"""Comparing predicted label maps with ground truth: the library behind ``spineseg evaluate``.

A file's case name is its name without the image extension and without one trailing
``_seg``, ``_pred`` or ``_label``, then without a trailing ``_image``; so
``case7_image_seg.nii.gz`` (what ``spineseg segment`` writes for ``case7_image.nii.gz``),
``case7_pred.nrrd``, ``case7_label.nii.gz`` and ``case7.mha`` all match case ``case7``.
Files named ``<case>_image.*`` are images, not label maps, and are skipped, so a
training-data folder works as ground truth.

Every pair is read and checked (same size, spacing, origin and direction; label
values within the classes) before anything is written; the report is built in a
temporary folder and renamed into place, so a failed run leaves no partial report.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.errors import InputError
from spineseg.geometry import CanonicalFrame
from spineseg.io import current_umask, is_image_file, read_image, strip_image_extension
from spineseg.labels import SPINE, SPINE_CLASSES, ClassInfo
from spineseg.metrics import case_metrics, reference_labels, unexpected_values
from spineseg.report import REPORT_MD, write_evaluation_report

CASE_SUFFIXES = ("_seg", "_pred", "_label")
IMAGE_SUFFIX = "_image"


# ----------------------------------------------------------------------------- classes and case names

def parse_classes(spec: str) -> Tuple[List[ClassInfo], bool]:
    """``--classes`` -> (list of ClassInfo, binary?)."""
    s = spec.strip().lower()
    if s in ("multiclass", "multi-class", "default"):
        return list(SPINE_CLASSES), False
    if s == "binary":
        return [SPINE], True
    known = {c.value: c for c in SPINE_CLASSES}
    palette = [(230, 120, 60), (120, 200, 90), (200, 90, 200), (90, 200, 200), (200, 200, 90)]
    out: List[ClassInfo] = []
    for i, item in enumerate(p for p in spec.split(",") if p.strip()):
        value, sep, name = item.partition("=")
        try:
            v = int(value)
        except ValueError:
            v = -1
        if not sep or v < 1 or not name.strip():
            raise InputError(f"--classes: cannot read '{item.strip()}'; use 'multiclass', 'binary' or VALUE=NAME "
                             "pairs with VALUE >= 1, e.g. '1=vertebra,2=disc'")
        color = known[v].color if v in known else palette[i % len(palette)]
        out.append(ClassInfo(v, name.strip(), color))
    if not out:
        raise InputError("--classes: no classes given; use 'multiclass', 'binary' or VALUE=NAME pairs")
    if len({c.value for c in out}) != len(out) or len({c.name for c in out}) != len(out):
        raise InputError(f"--classes: values and names must be distinct in '{spec}'")
    return out, False


def case_name(path: Path) -> str:
    """Case name of a label or image file (rule in the module docstring)."""
    name = strip_image_extension(path)
    for suffix in CASE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith(IMAGE_SUFFIX) and len(name) > len(IMAGE_SUFFIX):
        name = name[: -len(IMAGE_SUFFIX)]
    return name


def index_folder(folder: Path, what: str, *, images: bool = False) -> Dict[str, Path]:
    """Case name -> file for the image files in ``folder`` (label maps, or images when ``images``)."""
    found: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not is_image_file(p) or p.name.startswith("."):
            continue
        stem = strip_image_extension(p)
        if images and any(stem.endswith(s) for s in CASE_SUFFIXES):
            continue  # a label map beside the images
        if not images and stem.endswith(IMAGE_SUFFIX):
            continue  # an image beside the label maps
        cid = case_name(p)
        if cid in found:
            raise InputError(f"{what} folder {folder}: {found[cid].name} and {p.name} are both case '{cid}'; "
                             "keep one file per case")
        found[cid] = p
    return found


def match_cases(pred: Path, gt: Path) -> Tuple[Dict[str, Tuple[Path, Path]], List[str], List[str]]:
    """(case -> (pred file, gt file), predictions without ground truth, ground truth without prediction)."""
    for p, what in ((pred, "prediction"), (gt, "ground truth")):
        if not p.exists():
            raise InputError(f"{p}: {what} not found; check the path")
    if pred.is_file() and gt.is_file():
        return {case_name(gt): (pred, gt)}, [], []
    if pred.is_dir() != gt.is_dir():
        raise InputError(f"{pred} and {gt}: give two label files or two folders, not one of each")
    preds = index_folder(pred, "prediction")
    gts = index_folder(gt, "ground truth")
    if not preds:
        raise InputError(f"{pred}: no label maps found in this folder (NIfTI, NRRD or MHA files)")
    if not gts:
        raise InputError(f"{gt}: no label maps found in this folder (files named <case>_image.* are skipped as images)")
    common = sorted(set(preds) & set(gts))
    if not common:
        raise InputError(
            f"{pred} and {gt}: no case names match (predictions: {some_names(preds)}; ground truth: {some_names(gts)}); "
            "name files <case>_seg / <case>_pred / <case>_label or give both the same name")
    return ({c: (preds[c], gts[c]) for c in common}, sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds)))


def some_names(names: Sequence[str], n: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


# ----------------------------------------------------------------------------- checks

def geometry_mismatch(a, b) -> Optional[str]:
    """A description of how two SimpleITK images' grids differ, or None when they match."""
    if a.GetSize() != b.GetSize():
        return f"size {'x'.join(map(str, a.GetSize()))} vs {'x'.join(map(str, b.GetSize()))}"
    sa, sb = np.asarray(a.GetSpacing()), np.asarray(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=1e-4, atol=1e-6):
        return f"spacing {tuple(round(float(v), 5) for v in sa)} vs {tuple(round(float(v), 5) for v in sb)} mm"
    tol = 0.01 * float(min(sa.min(), sb.min()))
    if np.abs(np.asarray(a.GetOrigin()) - np.asarray(b.GetOrigin())).max() > max(tol, 1e-5):
        return (f"origin {tuple(round(v, 3) for v in a.GetOrigin())} vs "
                f"{tuple(round(v, 3) for v in b.GetOrigin())} mm")
    if np.abs(np.asarray(a.GetDirection()) - np.asarray(b.GetDirection())).max() > 1e-4:
        return "direction (orientation) differs"
    return None


def label_array(image, path: Path, classes: Sequence[ClassInfo], binary: bool, spec: str) -> np.ndarray:
    """A label map in the classes' scheme, by the one mapping validation uses (:func:`metrics.reference_labels`)."""
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        array = array.astype(np.int64)  # read_image checked the values are integers
    if not binary:
        labels = [c.value for c in classes]
        bad = unexpected_values(array, [0] + labels)
        if bad:
            raise InputError(f"{path}: label values {bad[:6]} are not among the classes {labels} ('--classes {spec}'); "
                             "pass the right --classes (e.g. 'binary' or '1=vertebra,2=disc')")
    return reference_labels(array, classes, binary)


# ----------------------------------------------------------------------------- run

def evaluate_folder(pairs: Dict[str, Tuple[Path, Path]], classes, binary: bool, spec: str, progress=None) -> Dict[str, dict]:
    """Read, check and score every pair; raises InputError naming the case on the first problem."""
    cases: Dict[str, dict] = {}
    for i, (cid, (pp, gp)) in enumerate(sorted(pairs.items())):
        if progress:
            progress(i / len(pairs), f"case {cid}")
        gt_img = read_image(gp, kind="label")
        pred_img = read_image(pp, kind="label")
        diff = geometry_mismatch(pred_img, gt_img)
        if diff:
            raise InputError(f"case {cid}: prediction {pp} and ground truth {gp} are on different grids ({diff}); "
                             "resample the prediction onto the ground-truth grid")
        gt = label_array(gt_img, gp, classes, binary, spec)
        pred = label_array(pred_img, pp, classes, binary, spec)
        cases[cid] = case_metrics(pred, gt, classes)
    if progress:
        progress(1.0, "scored")
    return cases


def overlay_source(pairs, images: Dict[str, Path], classes: Sequence[ClassInfo], binary: bool):
    """overlays(case_id) for the report: canonical (image or None, gt, pred, spacing)."""

    def overlays(cid: str):
        pp, gp = pairs[cid]
        gt_img = read_image(gp, kind="label")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-isotropic data warns about the slice axis; already said once
            frame = CanonicalFrame.of(gt_img)
        gt = reference_labels(sitk.GetArrayFromImage(gt_img), classes, binary)
        pred = reference_labels(sitk.GetArrayFromImage(read_image(pp, kind="label")), classes, binary)
        image = None
        if cid in images:
            img = read_image(images[cid])
            if geometry_mismatch(img, gt_img) is None:
                image = frame.to_canonical(sitk.GetArrayFromImage(img))
            else:
                warnings.warn(f"{images[cid]}: not on the ground-truth grid of case {cid}; overlay drawn without it")
        return image, frame.to_canonical(gt), frame.to_canonical(pred), frame.canonical_spacing

    return overlays


def check_report_dir(out: Path, overwrite: bool) -> None:

    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give a folder name for the report")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder exists and is not empty; pass --overwrite or choose another folder")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK) or (out.is_dir() and not os.access(out, os.W_OK | os.X_OK)):
        raise InputError(f"{out}: cannot write here (permission denied); choose another report folder")


def write_report(out: Path, cases, classes, overlays, title: str, notes: List[str], overwrite: bool, extra) -> Path:

    if out.is_dir() and any(out.iterdir()):  # --overwrite onto an earlier report: replace file by file
        return write_evaluation_report(out, cases, classes, overlays=overlays, title=title, notes=notes,
                                       overwrite=True, extra=extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent)))
    try:
        write_evaluation_report(tmp, cases, classes, overlays=overlays, title=title, notes=notes, extra=extra)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        if out.is_dir():
            out.rmdir()  # empty: checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / REPORT_MD
