"""Training data: find cases, validate them, cache their preprocessed arrays, split them into folds.

A data set is a folder of ``<case>_image.<ext>`` / ``<case>_label.<ext>`` pairs or a
``dataset.json`` (``{"cases": [{"id", "image", "label"}]}`` or the Medical Segmentation
Decathlon's ``{"training": [{"image", "label"}]}``; paths relative to the JSON file).
Everything is checked before training starts, and every problem names its case, because
finding a bad label map after an hour of training is what this module exists to prevent.

Preprocessing (N4 + normalisation) is slow, so each case is processed once per
configuration and stored as ``.npy`` arrays in the canonical (D, H, W) frame under a cache
folder, keyed by a hash of the preprocessing configuration and the files' size and mtime.
Worker processes memory-map those arrays.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.errors import Cancelled, InputError
from spineseg.geometry import CanonicalFrame, inplane_target_shape, resample_inplane
from spineseg.io import image_extension, read_image, strip_image_extension
from spineseg.preprocessing import PreprocessingConfig

IMAGE_SUFFIX = "_image"
LABEL_SUFFIX = "_label"
CACHE_VERSION = 1
#: foreground voxel coordinates kept per case for foreground-weighted sampling
MAX_FOREGROUND_POINTS = 20000


@dataclass(frozen=True)
class Case:
    """One training case: an image and its label map."""

    id: str
    image: Path
    label: Path


@dataclass
class CachedCase:
    """A case's preprocessed canonical arrays (memory-mapped ``.npy``) and what sampling needs."""

    id: str
    folder: Path
    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]  # canonical (D, H, W) mm
    values: List[int]  # label values present

    def image(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.folder / "image.npy", mmap_mode="r" if mmap else None)

    def label(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.folder / "label.npy", mmap_mode="r" if mmap else None)

    def foreground(self) -> np.ndarray:
        return np.load(self.folder / "foreground.npy")

    def source(self) -> Case:
        """The image and label files this entry was made from (validation segments the files)."""
        meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        return Case(self.id, Path(meta["image"]), Path(meta["label"]))


# ----------------------------------------------------------------------------- discovery

def find_cases(data: os.PathLike) -> List[Case]:
    """Cases of a data folder or ``dataset.json``, sorted by id; InputError naming the case on problems."""
    p = Path(data)
    if not p.exists():
        raise InputError(f"{p}: data not found; give a folder of <case>_image/<case>_label pairs or a dataset.json")
    if p.is_file():
        return _cases_from_json(p)
    if (p / "dataset.json").is_file():
        return _cases_from_json(p / "dataset.json")
    images: Dict[str, Path] = {}
    labels: Dict[str, Path] = {}
    for f in sorted(p.iterdir()):
        if not f.is_file() or not image_extension(f):
            continue
        stem = strip_image_extension(f)
        for suffix, table in ((IMAGE_SUFFIX, images), (LABEL_SUFFIX, labels)):
            if stem.endswith(suffix) and len(stem) > len(suffix):
                cid = stem[: -len(suffix)]
                if cid in table:
                    raise InputError(f"case {cid}: two {suffix[1:]} files ({table[cid].name}, {f.name}); keep one")
                table[cid] = f
    if not images and not labels:
        raise InputError(f"{p}: no <case>_image.<ext> / <case>_label.<ext> files (NIfTI, NRRD, MHA) in this folder")
    for cid in sorted(images):
        if cid not in labels:
            raise InputError(f"case {cid}: {images[cid].name} has no label map; add {cid}_label"
                             f"{image_extension(images[cid])} or remove the image")
    for cid in sorted(labels):
        if cid not in images:
            raise InputError(f"case {cid}: {labels[cid].name} has no image; add {cid}_image"
                             f"{image_extension(labels[cid])} or remove the label map")
    return [Case(cid, images[cid], labels[cid]) for cid in sorted(images)]


def _cases_from_json(path: Path) -> List[Case]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read dataset.json ({exc}); fix the JSON") from None
    entries = doc.get("cases", doc.get("training")) if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: dataset.json needs a non-empty list 'cases' (or 'training') of "
                         '{"id", "image", "label"} entries')
    cases: List[Case] = []
    seen = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "image" not in e or "label" not in e:
            raise InputError(f"{path}: entry {i} needs 'image' and 'label' paths")
        image = (path.parent / str(e["image"])).resolve()
        label = (path.parent / str(e["label"])).resolve()
        cid = str(e.get("id") or _case_id_from(image))
        if cid in seen:
            raise InputError(f"{path}: case id {cid!r} appears twice; give each entry a distinct 'id'")
        seen.add(cid)
        for what, f in (("image", image), ("label", label)):
            if not f.exists():
                raise InputError(f"case {cid}: {what} {f} not found; fix the path in {path.name}")
        cases.append(Case(cid, image, label))
    return sorted(cases, key=lambda c: c.id)


def _case_id_from(image: Path) -> str:
    stem = strip_image_extension(image)
    return stem[: -len(IMAGE_SUFFIX)] if stem.endswith(IMAGE_SUFFIX) else stem


# ----------------------------------------------------------------------------- validation

def _same_geometry(a: sitk.Image, b: sitk.Image) -> Optional[str]:
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-6):
        return f"spacing {tuple(round(v, 5) for v in a.GetSpacing())} vs {tuple(round(v, 5) for v in b.GetSpacing())}"
    tol = 1e-3 * max(a.GetSpacing())
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol):
        return f"origin {tuple(round(v, 3) for v in a.GetOrigin())} vs {tuple(round(v, 3) for v in b.GetOrigin())}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4):
        return "direction cosines differ"
    return None


def read_case(case: Case, allowed_values: Sequence[int]) -> Tuple[sitk.Image, sitk.Image, List[int]]:
    """Read and check one case; returns (image, label, label values present)."""
    try:
        image = read_image(case.image, kind="image")
        label = read_image(case.label, kind="label")
    except InputError as exc:
        raise InputError(f"case {case.id}: {exc}") from None
    problem = _same_geometry(image, label)
    if problem:
        raise InputError(f"case {case.id}: image and label map have different geometry ({problem}); "
                         "resample the label map onto the image grid")
    values = sorted(int(v) for v in np.unique(sitk.GetArrayViewFromImage(label)))
    bad = [v for v in values if v != 0 and v not in set(int(a) for a in allowed_values)]
    if bad:
        raise InputError(f"case {case.id}: label map {case.label.name} holds values {bad} outside the declared "
                         f"classes {sorted(set(int(a) for a in allowed_values))}; fix the labels or pass --classes")
    return image, label, values


def validate_cases(cases: Sequence[Case], allowed_values: Sequence[int],
                   progress: Optional[Callable[[float, str], None]] = None) -> Dict[str, Any]:
    """Read and check every case before any training; returns a data summary for the run folder."""
    if not cases:
        raise InputError("no training cases found")
    summary: Dict[str, Any] = {"n_cases": len(cases), "cases": {}}
    for i, case in enumerate(cases):
        if progress:
            progress(i / len(cases), f"checking {case.id}")
        image, _, values = read_case(case, allowed_values)
        summary["cases"][case.id] = {"image": str(case.image), "label": str(case.label),
                                     "size": list(image.GetSize()),
                                     "spacing": [round(v, 6) for v in image.GetSpacing()], "label_values": values}
    empty = [cid for cid, c in summary["cases"].items() if not any(v != 0 for v in c["label_values"])]
    if len(empty) == len(cases):
        warnings.warn("every label map is all background (no label value other than 0); the network can only "
                      "learn to predict background: check the labels")
    elif empty:
        warnings.warn(f"{len(empty)} of {len(cases)} label maps are all background ({', '.join(empty[:5])}"
                      f"{', ...' if len(empty) > 5 else ''}); check they are the right files")
    return summary


# ----------------------------------------------------------------------------- preprocessed cache

def _stat_key(path: Path) -> List[Any]:
    st = path.stat()
    return [str(path.resolve()), int(st.st_size), int(st.st_mtime_ns)]


def cache_key(case: Case, preprocessing: Dict[str, Any], inplane_mm: Optional[float] = None) -> str:
    """Hash of what decides a case's cached arrays: preprocessing, in-plane spacing and file identity."""
    what: Dict[str, Any] = {"v": CACHE_VERSION, "prep": preprocessing, "image": _stat_key(case.image),
                            "label": _stat_key(case.label)}
    if inplane_mm is not None:
        what["inplane_mm"] = float(inplane_mm)
    blob = json.dumps(what, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _safe(cid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cid)


def cache_case(case: Case, preprocessing: Dict[str, Any], cache_dir: os.PathLike, allowed_values: Sequence[int],
               *, seed: int = 0, inplane_mm: Optional[float] = None) -> CachedCase:
    """Preprocess ``case`` once per configuration (or reuse the cached arrays) and return its cache entry.

    ``inplane_mm``: resample image (linear, after normalisation) and labels (nearest) in-plane
    to this spacing, as inference will; the slice axis is never resampled.

    The folder is written under a temporary name and renamed into place, so a killed run never
    leaves a half-written entry that a later run would trust.
    """
    folder = Path(cache_dir) / f"{_safe(case.id)}-{cache_key(case, preprocessing, inplane_mm)}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return CachedCase(case.id, folder, tuple(meta["shape"]), tuple(meta["spacing"]), list(meta["values"]))
    image, label, values = read_case(case, allowed_values)
    frame = CanonicalFrame.of(image)  # computed once: preprocessing gets it (and its near-isotropic warning)
    array = PreprocessingConfig.from_dict(preprocessing).apply(image, frame=frame)
    lab = np.ascontiguousarray(frame.to_canonical(sitk.GetArrayFromImage(label)).astype(np.uint8))
    spacing = tuple(float(v) for v in frame.canonical_spacing)
    if inplane_mm is not None:
        mm = float(inplane_mm)
        shape = inplane_target_shape(array.shape, spacing, (spacing[0], mm, mm))
        if shape is not None:
            array = resample_inplane(array, shape)
            lab = np.ascontiguousarray(resample_inplane(lab, shape, labels=True))
            spacing = (spacing[0], spacing[1] * frame.shape[1] / shape[1], spacing[2] * frame.shape[2] / shape[2])
    fg = np.argwhere(lab > 0).astype(np.int32)
    if len(fg) > MAX_FOREGROUND_POINTS:
        rng = np.random.default_rng(seed)
        fg = fg[np.sort(rng.choice(len(fg), MAX_FOREGROUND_POINTS, replace=False))]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=str(cache_dir)))
    try:
        np.save(tmp / "image.npy", np.ascontiguousarray(array, dtype=np.float32))
        np.save(tmp / "label.npy", lab)
        np.save(tmp / "foreground.npy", fg)
        meta = {"id": case.id, "shape": list(array.shape), "spacing": list(spacing),
                "values": values, "image": str(case.image), "label": str(case.label), "preprocessing": preprocessing}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same entry first
            if not meta_path.is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CachedCase(case.id, folder, tuple(array.shape), spacing, values)


def cache_cases(cases: Sequence[Case], preprocessing: Dict[str, Any], cache_dir: os.PathLike,
                allowed_values: Sequence[int], *, progress: Optional[Callable[[float, str], None]] = None,
                cancel: Optional[Callable[[], bool]] = None, inplane_mm: Optional[float] = None
                ) -> Dict[str, CachedCase]:
    out: Dict[str, CachedCase] = {}
    for i, case in enumerate(cases):
        if cancel is not None and cancel():
            raise Cancelled("preprocessing cancelled")
        if progress:
            progress(i / max(1, len(cases)), f"preprocessing {case.id}")
        out[case.id] = cache_case(case, preprocessing, cache_dir, allowed_values, inplane_mm=inplane_mm)
    if progress:
        progress(1.0, "preprocessing done")
    return out


# ----------------------------------------------------------------------------- folds

def kfold_split(case_ids: Sequence[str], folds: int, seed: int = 0) -> List[List[str]]:
    """Deterministic k-fold split by case: shuffle the sorted ids with ``seed``, deal them round-robin.

    Returns ``folds`` lists of validation case ids (sizes differ by at most one).
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise InputError("case ids must be distinct")
    if int(folds) < 2:
        raise InputError(f"--folds {folds}: use 2 or more folds")
    if len(ids) < int(folds):
        raise InputError(f"{len(ids)} cases are fewer than {folds} folds; add cases or use --folds {max(2, len(ids))}")
    order = np.random.default_rng(int(seed)).permutation(len(ids))
    out: List[List[str]] = [[] for _ in range(int(folds))]
    for i, j in enumerate(order):
        out[i % int(folds)].append(ids[int(j)])
    return [sorted(f) for f in out]


def train_val_split(case_ids: Sequence[str], val_fraction: float, seed: int = 0) -> Tuple[List[str], List[str]]:
    """Hold out ``val_fraction`` of the cases (at least one when there are two or more) for validation."""
    ids = sorted(case_ids)
    if val_fraction <= 0 or len(ids) < 2:
        return ids, []
    n_val = min(len(ids) - 1, max(1, int(round(val_fraction * len(ids)))))
    order = np.random.default_rng(int(seed)).permutation(len(ids))
    val = sorted(ids[int(j)] for j in order[:n_val])
    return [c for c in ids if c not in set(val)], val
