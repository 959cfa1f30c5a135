"""Overlap metrics for label maps: DSC, PPV and sensitivity per class and for the spine union.

Everything is derived from one confusion matrix per case (one ``np.bincount``
pass over the volume), so per-class counts, the binary union and pooled metrics
always agree with each other. MONAI's metrics need one-hot tensors (K times the
volume in memory, plus torch); the tests check these values against MONAI's.

Conventions (also written into every report):

* DSC = 2TP / (2TP + FP + FN), PPV = TP / (TP + FP), sensitivity = TP / (TP + FN),
  counted in voxels.
* A metric whose denominator is zero is undefined and stored as NaN (``null`` in
  JSON): structure absent from both maps -> DSC, PPV, sensitivity all NaN;
  absent from the ground truth only -> DSC 0, PPV 0, sensitivity NaN; absent from
  the prediction only -> DSC 0, sensitivity 0, PPV NaN. Means and standard
  deviations over cases skip NaN and report how many cases counted (``n``).
* ``union`` ("spine") compares all foreground against all foreground, whatever
  the class. The class mean of a case is the mean over its defined class values.
* Pooled metrics come from the counts summed over cases (large structures weigh
  more); ``mean``/``std`` (sample std, ddof=1) are over cases.

Case dictionary (:func:`case_metrics`)::

    {"classes": {name: {"value", "dsc", "ppv", "sensitivity", "tp", "fp", "fn",
                        "gt_voxels", "pred_voxels"}},
     "union": {... same keys, "name": "spine"},
     "mean": {"dsc", "ppv", "sensitivity"},   # over classes
     "mean_dsc": float,
     "confusion_matrix": {"labels": [0, 1, ...], "names": [...], "matrix": [[...]]}}
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from spineseg.labels import SPINE, ClassInfo

METRICS = ("dsc", "ppv", "sensitivity")
METRIC_LABELS = {"dsc": "DSC", "ppv": "PPV", "sensitivity": "Sensitivity"}
UNION_NAME = SPINE.name
UNION_LABEL = f"{UNION_NAME} (all foreground)"
BACKGROUND_NAME = "background"

CONVENTIONS = (
    "DSC = 2TP/(2TP+FP+FN), PPV = TP/(TP+FP), sensitivity = TP/(TP+FN), in voxels. "
    "A metric with a zero denominator (structure absent from both maps; PPV with an empty prediction; "
    "sensitivity with an empty ground truth) is undefined (NaN, null in JSON) and left out of means; "
    "a structure predicted but absent from the ground truth scores DSC 0 and PPV 0. "
    "'spine' is the binary union of all foreground classes. Pooled values come from voxel counts summed "
    "over cases; mean and std (ddof=1) are over cases."
)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def _as_index(array: np.ndarray, labels: Sequence[int], what: str) -> np.ndarray:
    """Map label values to 0..K-1 (position in ``labels``); ValueError for values not in ``labels``."""
    a = np.asarray(array)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{what} has non-integer values")
        a = a.astype(np.int64)
    elif a.dtype.kind == "b":
        a = a.astype(np.uint8)
    elif a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer label array, got {a.dtype}")
    lo = min(labels)
    a_min, a_max = (int(a.min()), int(a.max())) if a.size else (lo, lo)
    if a_min >= 0 and a_max < 1 << 16 and lo >= 0:
        lut = np.full(max(a_max, max(labels)) + 1, -1, dtype=np.int64)
        lut[list(labels)] = np.arange(len(labels))
        idx = lut[a]
    else:  # negative or huge label values: slower but general
        values, inverse = np.unique(a, return_inverse=True)
        pos = {v: i for i, v in enumerate(labels)}
        lut = np.array([pos.get(int(v), -1) for v in values], dtype=np.int64)
        idx = lut[inverse.reshape(a.shape)]
    if idx.size and idx.min() < 0:
        bad = sorted(int(v) for v in np.unique(a[idx < 0])[:10])
        raise ValueError(f"{what} has label values {bad} outside the declared labels {list(labels)}")
    return idx


def unexpected_values(array: np.ndarray, labels: Iterable[int]) -> List[int]:
    """Label values in ``array`` that are not in ``labels`` (sorted); empty when all are known."""
    a = np.asarray(array)
    if a.dtype.kind in "iub" and a.size and 0 <= a.min() and a.max() < 1 << 16:
        present = np.flatnonzero(np.bincount(a.ravel().astype(np.intp, copy=False)))  # far faster than a sort
    else:
        present = np.unique(a)
    allowed = set(int(v) for v in labels)
    return [int(v) if float(v).is_integer() else float(v) for v in present if v not in allowed]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Voxel counts, rows = ground truth, columns = prediction, in the order of ``labels``.

    ``labels`` should include 0 (background). Raises ValueError for shape
    mismatch or values that are not in ``labels`` (a wrong class list must not
    silently count as background).
    """
    labels = [int(v) for v in labels]
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be distinct and non-empty, got {labels}")
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    k = len(labels)
    gi = _as_index(gt, labels, "ground truth")
    pi = _as_index(pred, labels, "prediction")
    counts = np.bincount((gi * k + pi).ravel(), minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)


def _scores(tp: int, fp: int, fn: int) -> Dict[str, Any]:
    return {
        "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
        "ppv": _ratio(tp, tp + fp),
        "sensitivity": _ratio(tp, tp + fn),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "gt_voxels": int(tp + fn),
        "pred_voxels": int(tp + fp),
    }


def _nanmean(values: Iterable[float]) -> float:
    vals = [v for v in (_num(x) for x in values) if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def metrics_from_confusion(cm: np.ndarray, labels: Sequence[int], classes: Sequence[ClassInfo]) -> Dict[str, Any]:
    """The case dictionary (see module docstring) from a confusion matrix over ``labels``."""
    cm = np.asarray(cm, dtype=np.int64)
    labels = [int(v) for v in labels]
    if 0 not in labels:
        raise ValueError("labels must include 0 (background)")
    pos = {v: i for i, v in enumerate(labels)}
    col, row = cm.sum(axis=0), cm.sum(axis=1)
    per_class: Dict[str, Dict[str, Any]] = {}
    for c in classes:
        i = pos[c.value]
        tp = int(cm[i, i])
        per_class[c.name] = {"value": c.value, **_scores(tp, int(col[i]) - tp, int(row[i]) - tp)}
    b = pos[0]
    fg = [i for i in range(len(labels)) if i != b]
    tp_u = int(cm[np.ix_(fg, fg)].sum())
    union = {"name": UNION_NAME, **_scores(tp_u, int(cm[b, fg].sum()), int(cm[fg, b].sum()))}
    mean = {m: _nanmean(per_class[c.name][m] for c in classes) for m in METRICS}
    names = {c.value: c.name for c in classes}
    return {
        "classes": per_class,
        "union": union,
        "mean": mean,
        "mean_dsc": mean["dsc"],
        "confusion_matrix": {
            "labels": labels,
            "names": [BACKGROUND_NAME if v == 0 else names.get(v, str(v)) for v in labels],
            "matrix": cm.tolist(),
        },
    }


def reference_labels(label: np.ndarray, classes: Sequence[ClassInfo], binary: bool) -> np.ndarray:
    """A ground-truth label map in a model's label scheme: a binary model's one class is every structure."""
    if binary:
        return (np.asarray(label) != 0).astype(np.uint8) * np.uint8(classes[0].value)
    return np.asarray(label)


def case_metrics(pred: np.ndarray, gt: np.ndarray, classes: Sequence[ClassInfo]) -> Dict[str, Any]:
    """DSC, PPV, sensitivity and voxel counts per class and for the spine union, for one case.

    ``pred`` and ``gt`` are integer label arrays of the same shape holding 0 and
    the values of ``classes``. See the module docstring for the returned
    dictionary and the empty-structure conventions.
    """
    classes = list(classes)
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct, got {names}")
    labels = [0] + [c.value for c in classes]
    return metrics_from_confusion(confusion_matrix(pred, gt, labels), labels, classes)


def _summary(per_case: List[Mapping[str, Any]], pooled: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"pooled": pooled, "mean": {}, "std": {}, "n": {}}
    for m in METRICS:
        vals = np.array([_num(d[m]) for d in per_case], dtype=float)
        vals = vals[~np.isnan(vals)]
        out["mean"][m] = float(vals.mean()) if vals.size else float("nan")
        out["std"][m] = float(vals.std(ddof=1)) if vals.size > 1 else float("nan")
        out["n"][m] = int(vals.size)
    return out


def pool_metrics(cases: Mapping[str, Mapping[str, Any]], classes: Sequence[ClassInfo]) -> Dict[str, Any]:
    """Pool case dictionaries: summed-count metrics plus mean/std/n over cases.

    Returns ``{"n_cases", "cases", "classes": {name: summary}, "union": summary,
    "class_mean": summary, "mean_dsc", "confusion_matrix"}`` where a summary is
    ``{"pooled": {dsc, ppv, sensitivity, tp, fp, fn, ...}, "mean": {...}, "std": {...}, "n": {...}}``
    (``class_mean["pooled"]`` is the mean of the pooled class values). Accepts
    dictionaries read back from metrics.json (NaN stored as null).
    """
    classes = list(classes)
    if not cases:
        raise ValueError("no cases to pool")
    ids = sorted(cases)
    first = cases[ids[0]]["confusion_matrix"]
    labels = [int(v) for v in first["labels"]]
    total = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for cid in ids:
        cmd = cases[cid]["confusion_matrix"]
        if [int(v) for v in cmd["labels"]] != labels:
            raise ValueError(f"case {cid}: confusion matrix labels {cmd['labels']} differ from {labels}")
        total += np.asarray(cmd["matrix"], dtype=np.int64)
    pooled = metrics_from_confusion(total, labels, classes)
    out: Dict[str, Any] = {"n_cases": len(ids), "cases": ids, "classes": {}}
    for c in classes:
        out["classes"][c.name] = {
            "value": c.value,
            **_summary([cases[i]["classes"][c.name] for i in ids], pooled["classes"][c.name]),
        }
    out["union"] = {"name": UNION_NAME, **_summary([cases[i]["union"] for i in ids], pooled["union"])}
    out["class_mean"] = _summary([cases[i]["mean"] for i in ids], dict(pooled["mean"]))
    out["mean_dsc"] = out["class_mean"]["mean"]["dsc"]
    out["confusion_matrix"] = pooled["confusion_matrix"]
    return out


def structure_rows(classes: Sequence[ClassInfo]) -> List[tuple]:
    """(key, label) of the rows a table shows: each class, the union (multi-class only), the class mean.

    ``key`` is ``("classes", name)``, ``("union",)`` or ``("class_mean",)``, a path into a pooled
    or case dictionary. For a single-class (binary) model the union equals the class and is not repeated.
    """
    rows: List[tuple] = [(("classes", c.name), c.name) for c in classes]
    if len(classes) > 1:
        rows.append((("union",), UNION_LABEL))
        rows.append((("class_mean",), "mean over classes"))
    return rows


def lookup(d: Mapping[str, Any], key: tuple) -> Optional[Mapping[str, Any]]:
    """Follow a :func:`structure_rows` key into a pooled dictionary (``class_mean`` -> ``mean`` in cases)."""
    if key == ("class_mean",) and "class_mean" not in d:
        return d.get("mean")
    node: Any = d
    for k in key:
        node = node.get(k) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node
