"""Evaluation and ablation reports: Markdown tables, CSV, JSON and PNG figures.

``write_evaluation_report`` is what ``spineseg evaluate`` and the end of a
cross-validation write; ``write_ablation_report`` puts several models side by
side in the layout of the design report's Table 1. Every file is written
atomically (rendered in memory, then :func:`spineseg.io.write_bytes_atomic`).
Figures use matplotlib's object API with the Agg canvas (no pyplot state, no
display needed); without matplotlib the tables are still written and the
report says the figures were skipped.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from spineseg.errors import InputError
from spineseg.io import write_bytes_atomic, write_json
from spineseg.labels import ClassInfo, classes_to_dicts
from spineseg.metrics import CONVENTIONS, METRICS, METRIC_LABELS, UNION_LABEL, lookup, pool_metrics, structure_rows

PathLike = Union[str, Path]
OverlayFn = Callable[[str], tuple]

REPORT_MD = "report.md"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
CONFUSION_FIGURE = "confusion_matrix.png"
REPORT_FILES = (REPORT_MD, METRICS_CSV, METRICS_JSON, CONFUSION_FIGURE)
#: the files of :func:`write_ablation_report`, by format
ABLATION_FILES = {"md": "ablation.md", "csv": "ablation.csv", "json": "ablation.json"}
_OVERLAY_RE = re.compile(r"^overlay_(best|worst)_.*\.png$")
_UNION_COLOR = (230, 120, 60)
_CURVE_TITLES = {"loss": "training loss", "train_loss": "training loss", "val_loss": "validation loss",
                 "val_dsc": "validation DSC", "lr": "learning rate"}


# ----------------------------------------------------------------------------- small helpers

def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _mean_std(summary: Mapping[str, Any], metric: str, digits: int = 3) -> str:
    mean = summary["mean"][metric]
    std = summary["std"][metric]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return _fmt(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _csv_bytes(header: Sequence[str], rows: List[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if (isinstance(v, float) and math.isnan(v)) or v is None else v for v in row])
    return buf.getvalue().encode("utf-8")


def _md_table(header: Sequence[str], rows: List[Sequence[str]], align: str = "") -> List[str]:
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id)[:80] or "case"


def _rgb(color: Sequence[int]) -> Tuple[float, float, float]:
    return tuple(float(c) / 255.0 for c in color[:3])  # type: ignore[return-value]


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save_png(fig, path: Path, overwrite: bool) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return write_bytes_atomic(buf.getvalue(), path, overwrite=overwrite)


# ----------------------------------------------------------------------------- figures

def plot_confusion_matrix(cm: Mapping[str, Any], path: PathLike, *, title: str = "", overwrite: bool = False) -> Path:
    """Heatmap of the confusion matrix, each row normalised to 100% of its ground-truth voxels."""
    matrix = np.asarray(cm["matrix"], dtype=np.float64)
    names = list(cm["names"])
    k = len(names)
    rows = matrix.sum(axis=1, keepdims=True)
    frac = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 1.3 + 1.15 * k
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac * 100.0, cmap="Blues", vmin=0.0, vmax=100.0)
    for i in range(k):
        for j in range(k):
            colour = "white" if frac[i, j] > 0.55 else "black"
            ax.text(j, i, f"{frac[i, j] * 100:.1f}%\n{int(matrix[i, j]):,}", ha="center", va="center",
                    fontsize=8, color=colour)
    ticks = [n.replace(" ", "\n", 1) if len(n) > 10 else n for n in names]
    ax.set_xticks(range(k), ticks, fontsize=8)
    ax.set_yticks(range(k), ticks, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "Confusion matrix (row %, voxel counts)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of ground-truth voxels")
    return _save_png(fig, Path(path), overwrite)


def plot_per_fold(cases: Mapping[str, Mapping[str, Any]], folds: Mapping[str, Any], classes: Sequence[ClassInfo],
                  path: PathLike, *, metric: str = "dsc", overwrite: bool = False) -> Path:
    """Box plots of a per-case metric, one panel per structure, one box per fold, cases as dots."""
    rows = [r for r in structure_rows(classes) if r[0] != ("class_mean",)]
    fold_ids = sorted({folds[c] for c in cases if c in folds}, key=lambda f: (str(type(f)), f))
    colours = [_rgb(c.color) for c in classes] + [_rgb(_UNION_COLOR)]
    n = len(rows)
    fig = _figure(min(3.2 * n, 16), 3.6)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, (key, label), colour in zip(axes, rows, colours):
        data = []
        for f in fold_ids:
            vals = [lookup(cases[c], key)[metric] for c in sorted(cases) if folds.get(c) == f]  # type: ignore[index]
            data.append([float(v) for v in vals if v is not None and not math.isnan(float(v))])
        pos = np.arange(1, len(fold_ids) + 1)
        present = [i for i, d in enumerate(data) if d]
        if present:
            bp = ax.boxplot([data[i] for i in present], positions=pos[present], widths=0.6, patch_artist=True,
                            showfliers=False, medianprops={"color": "black"})
            for box in bp["boxes"]:
                box.set_facecolor(colour + (0.55,))
                box.set_edgecolor("0.25")
        for p, d in zip(pos, data):
            ax.scatter(p + rng.uniform(-0.12, 0.12, len(d)), d, s=10, color="0.15", zorder=3)
        ax.set_xticks(pos, [str(f) for f in fold_ids])
        ax.set_xlabel("fold")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{METRIC_LABELS[metric]} per case")
    return _save_png(fig, Path(path), overwrite)


_CURVE_ORDER = ("loss", "train_loss", "val_loss", "val_dsc", "lr")


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: PathLike, *,
                         overwrite: bool = False) -> Path:
    """One panel per logged quantity (loss, val DSC, lr, ...) against epoch, one line per fold."""
    keys: List[str] = []
    for records in curves.values():
        for r in records:
            for k, v in r.items():
                if k != "epoch" and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                    keys.append(k)
    # quality and schedule curves only; bookkeeping such as eta_s or windows/s is left out when both exist
    wanted = [k for k in keys if k in _CURVE_ORDER or any(t in k for t in ("loss", "dsc", "dice"))]
    keys = sorted(wanted or keys, key=lambda k: (_CURVE_ORDER.index(k) if k in _CURVE_ORDER else len(_CURVE_ORDER), k))[:4]
    if not keys:
        raise ValueError("learning curves hold no numeric values besides 'epoch'")
    fig = _figure(4.0 * len(keys), 3.4)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for fold, records in sorted(curves.items(), key=lambda kv: str(kv[0])):
            pts = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(records)
                   if isinstance(r.get(key), (int, float)) and r.get(key) is not None and math.isfinite(r[key])]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="." if len(pts) < 30 else None, label=f"fold {fold}")
        if key == "lr" or (key.endswith("loss") and _positive_span(curves, key) > 100):
            ax.set_yscale("log")
        if key.endswith("dsc"):
            ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("epoch")
        ax.set_title(_CURVE_TITLES.get(key, key.replace("_", " ")), fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    return _save_png(fig, Path(path), overwrite)


def _positive_span(curves: Mapping[str, Sequence[Mapping[str, Any]]], key: str) -> float:
    vals = [float(r[key]) for rs in curves.values() for r in rs
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and r[key] > 0]
    return max(vals) / min(vals) if vals else 1.0


def _label_rgba(label: np.ndarray, classes: Sequence[ClassInfo], alpha: float) -> np.ndarray:
    rgba = np.zeros(label.shape + (4,), dtype=np.float32)
    for c in classes:
        m = label == c.value
        rgba[m, :3] = _rgb(c.color)
        rgba[m, 3] = alpha
    return rgba


def _display_base(image_slice: np.ndarray) -> np.ndarray:
    """A 2D image scaled to 0..1 between its 1st and 99.5th percentile, for a grey background."""
    im = np.asarray(image_slice, dtype=np.float32)
    lo, hi = np.percentile(im, [1, 99.5])
    return np.clip((im - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def _draw_labels(ax, base: np.ndarray, lab: Optional[np.ndarray], classes: Sequence[ClassInfo], aspect: float) -> None:
    """The grey image, and (when given) the labels over it: tinted areas with class-coloured contours."""
    ax.imshow(base, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
    if lab is None:
        return
    ax.imshow(_label_rgba(lab, classes, 0.4), aspect=aspect, interpolation="nearest")
    for c in classes:
        m = (lab == c.value).astype(np.float32)
        if 0 < m.sum() < m.size:
            ax.contour(m, levels=[0.5], colors=[_rgb(c.color)], linewidths=0.8)


def _slice_panels(n: int, shape: Tuple[int, int], spacing: Optional[Sequence[float]]):
    """(figure, axes, pixel aspect) for ``n`` side-by-side panels of one (H, W) slice at its true aspect."""
    aspect = float(spacing[1]) / float(spacing[2]) if spacing is not None else 1.0
    h, w = shape
    panel_w = 4.2
    panel_h = min(6.0, max(2.5, panel_w * h * aspect / max(w, 1)))
    fig = _figure(n * panel_w, panel_h + 0.9)
    return fig, fig.subplots(1, n), aspect


def pick_slice(gt: np.ndarray) -> int:
    """The middle slice, or the slice with most ground-truth foreground when the middle one has none."""
    mid = gt.shape[0] // 2
    if np.any(gt[mid]):
        return mid
    counts = (gt != 0).reshape(gt.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts)) if counts.max() > 0 else mid


def plot_overlay(image: Optional[np.ndarray], gt: np.ndarray, pred: np.ndarray, classes: Sequence[ClassInfo],
                 path: PathLike, *, title: str = "", spacing: Optional[Sequence[float]] = None,
                 overwrite: bool = False) -> Path:
    """Middle slice of a case: ground truth, prediction and the errors, over the image.

    Arrays are canonical (D, H, W); ``spacing`` (mm along D, H, W) sets the pixel
    aspect. Colours come from ``ClassInfo.color``; contours mark class borders.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    z = pick_slice(gt)
    g, p = gt[z], pred[z]
    if image is not None:
        base = _display_base(np.asarray(image)[z])
    else:
        base = np.full(g.shape, 0.12, dtype=np.float32)
    fig, axes, aspect = _slice_panels(3, g.shape, spacing)
    missed = (g != 0) & (p != g)
    extra = (g == 0) & (p != 0)
    err = np.zeros(g.shape + (4,), dtype=np.float32)
    err[missed] = (0.9, 0.1, 0.1, 0.8)
    err[extra] = (0.1, 0.8, 0.9, 0.8)
    n_err = int(missed.sum() + extra.sum())
    panels = [("ground truth", g), ("prediction", p), (f"errors ({n_err:,} voxels)", None)]
    for ax, (name, lab) in zip(axes, panels):
        _draw_labels(ax, base, lab, classes, aspect)
        if lab is None:
            ax.imshow(err, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    from matplotlib.patches import Patch

    handles = [Patch(color=_rgb(c.color), label=c.name) for c in classes]
    handles += [Patch(color=(0.9, 0.1, 0.1), label="missed / wrong class"), Patch(color=(0.1, 0.8, 0.9), label="extra")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{title}  (slice {z + 1} of {gt.shape[0]})" if title else f"slice {z + 1} of {gt.shape[0]}",
                 fontsize=10)
    return _save_png(fig, Path(path), overwrite)


def plot_segmentation(image: np.ndarray, label: np.ndarray, classes: Sequence[ClassInfo], path: PathLike, *,
                      title: str = "", spacing: Optional[Sequence[float]] = None, overwrite: bool = False,
                      label_names: bool = False) -> Path:
    """One slice of a segmented volume (no ground truth): the image, and the labels over it.

    Arrays are canonical (D, H, W). The slice is the middle one, or the one with most
    labelled voxels when the middle one has none; ``spacing`` sets the pixel aspect.
    ``label_names`` writes each class's name on its largest piece in the slice instead of
    a legend (for many classes, such as one per spinal level).
    """
    label = np.asarray(label)
    z = pick_slice(label)
    base = _display_base(np.asarray(image)[z])
    lab = label[z]
    fig, axes, aspect = _slice_panels(2, lab.shape, spacing)
    for ax, name, shown in ((axes[0], "image", None), (axes[1], "segmentation", lab)):
        _draw_labels(ax, base, shown, classes, aspect)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    from matplotlib.patches import Patch

    if label_names:
        _write_names(axes[1], lab, classes)
    else:
        fig.legend(handles=[Patch(color=_rgb(c.color), label=c.name) for c in classes], loc="outside lower center",
                   ncol=len(classes), fontsize=8, frameon=False)
    where = f"slice {z + 1} of {label.shape[0]}"
    fig.suptitle(f"{title}  ({where})" if title else where, fontsize=10)
    return _save_png(fig, Path(path), overwrite)


def _write_names(ax, lab: np.ndarray, classes: Sequence[ClassInfo]) -> None:
    """Each class's name at the centre of its largest piece in a 2D label slice."""
    import SimpleITK as sitk

    for c in classes:
        m = lab == c.value
        if not m.any():
            continue
        cc = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(m.astype(np.uint8))), sortByObjectSize=True)
        row, col = np.argwhere(sitk.GetArrayViewFromImage(cc) == 1).mean(axis=0)
        ax.text(col, row, c.name, fontsize=6, ha="center", va="center", color="black",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": (1, 1, 1, 0.7), "edgecolor": "none"})


# ----------------------------------------------------------------------------- evaluation report

def _case_rows(cases: Mapping[str, Mapping[str, Any]], classes: Sequence[ClassInfo],
               folds: Optional[Mapping[str, Any]]) -> List[List[Any]]:
    rows = []
    for cid in sorted(cases):
        case = cases[cid]
        fold = "" if folds is None else folds.get(cid, "")
        entries = [(c.name, c.value, case["classes"][c.name]) for c in classes]
        if len(classes) > 1:  # one class: the union is that class
            entries.append((UNION_LABEL, "", case["union"]))
        for name, value, d in entries:
            rows.append([cid, fold, name, value] + [d[m] for m in METRICS]
                        + [d["tp"], d["fp"], d["fn"], d["gt_voxels"], d["pred_voxels"]])
    return rows


def _best_worst(cases: Mapping[str, Mapping[str, Any]]) -> Tuple[Optional[str], Optional[str]]:
    scored = [(float(c["mean_dsc"]), cid) for cid, c in cases.items()
              if c.get("mean_dsc") is not None and not math.isnan(float(c["mean_dsc"]))]
    if not scored:
        return None, None
    scored.sort()
    return scored[-1][1], scored[0][1]


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():

        raise InputError(f"{out_dir}: exists and is not a folder; give a folder for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not overwrite:

        clash = [n for n in REPORT_FILES + ("per_fold_dsc.png", "learning_curves.png") if (out_dir / n).exists()]
        clash += [p.name for p in out_dir.glob("overlay_*.png") if _OVERLAY_RE.match(p.name)]
        if clash:
            raise InputError(f"{out_dir}: already holds a report ({clash[0]}); pass --overwrite or choose another folder")


def write_evaluation_report(out_dir: PathLike, cases: Mapping[str, Mapping[str, Any]], classes: Sequence[ClassInfo],
                            *, folds: Optional[Mapping[str, Any]] = None,
                            curves: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
                            overlays: Optional[OverlayFn] = None, title: str = "", overwrite: bool = False,
                            notes: Sequence[str] = (), extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write metrics.csv, metrics.json, figures and report.md into ``out_dir``; returns report.md's path.

    ``cases`` maps case id -> :func:`spineseg.metrics.case_metrics` output; ``folds``
    maps case id -> fold; ``curves`` maps fold -> list of per-epoch dicts
    (``epoch``, ``loss``, ``val_dsc``, ...); ``overlays(case_id)`` returns
    canonical ``(image, gt, pred)`` arrays (image may be None; an optional 4th
    item is the (D, H, W) spacing in mm) for the best and worst case by mean DSC.
    ``notes`` are extra lines for the report; ``extra`` is stored in metrics.json.
    Refuses to replace an earlier report's files unless ``overwrite``.
    """
    out = Path(out_dir)
    classes = list(classes)
    if not cases:
        raise ValueError("no cases to report")
    _check_out_dir(out, overwrite)
    pooled = pool_metrics(cases, classes)
    per_fold: Dict[str, Any] = {}
    if folds:
        for f in sorted({folds[c] for c in cases if c in folds}, key=lambda f: (str(type(f)), f)):
            per_fold[str(f)] = pool_metrics({c: cases[c] for c in cases if folds.get(c) == f}, classes)
    best, worst = _best_worst(cases)
    if overwrite:  # an earlier report's overlays are named after its cases: drop them
        for p in out.glob("overlay_*.png"):
            if _OVERLAY_RE.match(p.name):
                p.unlink()

    figures: Dict[str, str] = {}
    skipped: List[str] = []
    if matplotlib_available():
        figures["confusion"] = plot_confusion_matrix(pooled["confusion_matrix"], out / CONFUSION_FIGURE,
                                                     overwrite=overwrite).name
        if folds:
            figures["folds"] = plot_per_fold(cases, folds, classes, out / "per_fold_dsc.png", overwrite=overwrite).name
        if curves:
            figures["curves"] = plot_learning_curves(curves, out / "learning_curves.png", overwrite=overwrite).name
        if overlays is not None and best is not None:
            for which, cid in (("best", best), ("worst", worst)):
                if which == "worst" and cid == best:
                    continue
                item = overlays(cid)  # type: ignore[arg-type]
                spacing = item[3] if len(item) > 3 else None
                dsc = float(cases[cid]["mean_dsc"])  # type: ignore[index]
                name = f"overlay_{which}_{_safe_name(cid)}.png"  # type: ignore[arg-type]
                figures[which] = plot_overlay(item[0], item[1], item[2], classes, out / name, spacing=spacing,
                                              title=f"{which} case {cid}: mean DSC {dsc:.3f}",
                                              overwrite=overwrite).name
    else:
        skipped.append("figures skipped: matplotlib is not installed (pip install matplotlib)")
        warnings.warn("matplotlib is not installed; the report has tables but no figures")

    # metrics.csv: one row per case and structure
    header = ["case", "fold", "structure", "value", *METRICS, "tp", "fp", "fn", "gt_voxels", "pred_voxels"]
    write_bytes_atomic(_csv_bytes(header, _case_rows(cases, classes, folds)), out / METRICS_CSV, overwrite=overwrite)

    doc = {
        "format": "spineseg-evaluation",
        "format_version": 1,
        "title": title,
        "classes": classes_to_dicts(classes),
        "conventions": CONVENTIONS,
        "best_case": best,
        "worst_case": worst,
        "folds": dict(folds) if folds else None,
        "pooled": pooled,
        "per_fold": per_fold or None,
        "cases": {cid: cases[cid] for cid in sorted(cases)},
        **({"extra": dict(extra)} if extra else {}),
    }
    write_json(doc, out / METRICS_JSON, overwrite=overwrite)

    md = _report_markdown(title, cases, classes, pooled, per_fold, folds, figures, best, worst,
                          list(notes) + skipped)
    return write_bytes_atomic(md.encode("utf-8"), out / REPORT_MD, overwrite=overwrite)


def read_evaluation(path: PathLike) -> Tuple[Dict[str, Dict[str, Any]], List[ClassInfo], Optional[Dict[str, Any]]]:
    """(cases, classes, folds) from a report's metrics.json (or its folder), e.g. to pool runs again.

    Undefined metrics come back as NaN, so the cases feed :func:`pool_metrics`
    and :func:`write_ablation_report` exactly like fresh ones.
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_JSON
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read evaluation results ({exc}); give a report folder or its metrics.json") from None
    if not isinstance(doc, dict) or doc.get("format") != "spineseg-evaluation":
        raise InputError(f"{p}: not a SpineSeg metrics.json (format {doc.get('format') if isinstance(doc, dict) else None!r})")

    def nan(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: nan(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [nan(v) for v in obj]
        return float("nan") if obj is None else obj

    cases = {cid: {**nan({k: v for k, v in c.items() if k != "confusion_matrix"}),
                   "confusion_matrix": c["confusion_matrix"]} for cid, c in doc["cases"].items()}
    classes = [ClassInfo.from_dict(d) for d in doc["classes"]]
    return cases, classes, doc.get("folds")


def _report_markdown(title: str, cases: Mapping[str, Mapping[str, Any]], classes: Sequence[ClassInfo],
                     pooled: Mapping[str, Any], per_fold: Mapping[str, Any], folds: Optional[Mapping[str, Any]],
                     figures: Mapping[str, str], best: Optional[str], worst: Optional[str], notes: List[str]) -> str:
    rows = structure_rows(classes)
    lines = [f"# {title or 'Segmentation evaluation'}", ""]
    lines.append(f"{pooled['n_cases']} cases; classes: "
                 + ", ".join(f"{c.value} {c.name}" for c in classes) + ".")
    if best is not None:
        lines.append(f"Best case (mean DSC): `{best}` {_fmt(cases[best]['mean_dsc'])}; "
                     f"worst: `{worst}` {_fmt(cases[worst]['mean_dsc'])}.")  # type: ignore[index]
    lines += [""] + [f"> {n}" for n in notes] + ([""] if notes else [])

    lines += ["## Summary", "", "Mean ± std over cases (n = cases where the metric is defined), and pooled "
              "over all voxels.", ""]
    table = []
    for key, label in rows:
        s = lookup(pooled, key)
        table.append([label] + [_mean_std(s, m) for m in METRICS]  # type: ignore[arg-type]
                     + [_fmt(s["pooled"][m]) for m in METRICS] + [str(s["n"]["dsc"])])  # type: ignore[index]
    lines += _md_table(["structure", "DSC", "PPV", "sensitivity", "pooled DSC", "pooled PPV",
                        "pooled sensitivity", "n"], table)

    if per_fold:
        lines += ["", "## Per fold", "", "Mean DSC over the fold's cases.", ""]
        frows = []
        for f, pf in per_fold.items():
            frows.append([f, str(pf["n_cases"])] + [_mean_std(lookup(pf, key), "dsc") for key, _ in rows])  # type: ignore[arg-type]
        lines += _md_table(["fold", "cases"] + [label for _, label in rows], frows)
    if "folds" in figures:
        lines += ["", f"![DSC per fold]({figures['folds']})"]
    if "curves" in figures:
        lines += ["", "## Learning curves", "", f"![learning curves]({figures['curves']})"]

    lines += ["", "## Confusion matrix", "", "Voxels summed over all cases; rows = ground truth, columns = prediction.", ""]
    cm = pooled["confusion_matrix"]
    lines += _md_table(["ground truth \\ prediction"] + list(cm["names"]),
                       [[n] + [f"{int(v):,}" for v in r] for n, r in zip(cm["names"], cm["matrix"])])
    if "confusion" in figures:
        lines += ["", f"![confusion matrix]({figures['confusion']})"]

    if "best" in figures or "worst" in figures:
        lines += ["", "## Best and worst case", "",
                  "Middle slice; left ground truth, centre prediction, right errors "
                  "(red: ground-truth voxel missed or given the wrong class, cyan: extra foreground).", ""]
        for which in ("best", "worst"):
            if which in figures:
                lines += [f"![{which} case]({figures[which]})", ""]

    lines += ["", "## Per case", ""]
    header = ["case"] + (["fold"] if folds else []) + [f"DSC {label}" for _, label in rows]
    crows = []
    for cid in sorted(cases):
        mark = " (best)" if cid == best else " (worst)" if cid == worst else ""
        crows.append([f"`{cid}`{mark}"] + ([str(folds.get(cid, ""))] if folds else [])
                     + [_fmt(lookup(cases[cid], key)["dsc"]) for key, _ in rows])  # type: ignore[index]
    lines += _md_table(header, crows)
    lines += ["", "## Files", "", "- `metrics.csv`: one row per case and structure (DSC, PPV, sensitivity, voxel counts)",
              "- `metrics.json`: per case, pooled and per fold, with the class list"]
    lines += [f"- `{name}`" for name in figures.values()]
    lines += ["", "## Conventions", "", CONVENTIONS, ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- ablation table

def ablation_rows(results: Mapping[str, Mapping[str, Any]], classes: Sequence[ClassInfo],
                  digits: int = 3) -> List[Dict[str, Any]]:
    """The ablation table as data: one row per metric and structure, with the best model(s) of the row.

    Best = highest mean over cases, compared at the printed precision (ties are all best).
    A model with other classes than the table's (a binary model beside multi-class ones) fills
    only the spine-union row; its other cells are undefined.
    """
    models = list(results)
    names = {c.name for c in classes}
    rows = []
    for metric in METRICS:
        for key, label in structure_rows(classes):
            values: Dict[str, Dict[str, Any]] = {}
            for m in models:
                own = set(results[m].get("classes", {}))
                s = lookup(results[m], key) if own == names or key == ("union",) else None
                if s is None:
                    values[m] = {"mean": None, "std": None, "n": 0, "pooled": None}
                    continue
                values[m] = {"mean": s["mean"][metric], "std": s["std"][metric], "n": s["n"][metric],  # type: ignore[index]
                             "pooled": s["pooled"][metric]}  # type: ignore[index]
            shown = {m: round(float(v["mean"]), digits) for m, v in values.items()
                     if v["mean"] is not None and not math.isnan(float(v["mean"]))}
            top = max(shown.values()) if shown else None
            best = [m for m in models if m in shown and shown[m] == top]
            rows.append({"metric": metric, "structure": label, "values": values, "best": best})
    return rows


def write_ablation_report(out_dir: PathLike, results: Mapping[str, Mapping[str, Any]], classes: Sequence[ClassInfo],
                          *, title: str = "", overwrite: bool = False, digits: int = 3) -> Path:
    """Write ablation.md, ablation.csv and ablation.json: models as columns, DSC/PPV/sensitivity rows.

    ``results`` maps model name -> :func:`spineseg.metrics.pool_metrics` output
    (column order follows it). Cells are mean ± std over cases, best per row in bold.
    Returns ablation.md's path.
    """
    if not results:
        raise ValueError("no models to compare")
    out = Path(out_dir)
    classes = list(classes)
    if not overwrite:
        clash = [n for n in ABLATION_FILES.values() if (out / n).exists()]
        if clash:

            raise InputError(f"{out / clash[0]}: output exists; pass --overwrite or choose another folder")
    rows = ablation_rows(results, classes, digits)
    models = list(results)

    lines = [f"# {title or 'Ablation'}", "",
             "Mean ± std over cases; best value per row in **bold**. "
             + ", ".join(f"{m}: {results[m]['n_cases']} cases" for m in models) + ".", ""]
    table = []
    last_metric = None
    for r in rows:
        cells = []
        for m in models:
            v = r["values"][m]
            text = _mean_std({"mean": {"x": v["mean"]}, "std": {"x": v["std"]}}, "x", digits)
            cells.append(f"**{text}**" if m in r["best"] else text)
        metric = METRIC_LABELS[r["metric"]] if r["metric"] != last_metric else ""
        last_metric = r["metric"]
        table.append([metric, r["structure"]] + cells)
    lines += _md_table(["metric", "structure"] + models, table, align="ll" + "r" * len(models))
    lines += ["", "Pooled over all voxels (summed counts):", ""]
    ptable = [[METRIC_LABELS[r["metric"]], r["structure"]] + [_fmt(r["values"][m]["pooled"], digits) for m in models]
              for r in rows]
    lines += _md_table(["metric", "structure"] + models, ptable, align="ll" + "r" * len(models))
    lines += ["", "## Conventions", "", CONVENTIONS, ""]

    csv_rows = [[r["metric"], r["structure"], m, r["values"][m]["mean"], r["values"][m]["std"], r["values"][m]["n"],
                 r["values"][m]["pooled"], int(m in r["best"])] for r in rows for m in models]
    write_bytes_atomic(_csv_bytes(["metric", "structure", "model", "mean", "std", "n", "pooled", "best"], csv_rows),
                       out / ABLATION_FILES["csv"], overwrite=overwrite)
    doc = {"format": "spineseg-ablation", "format_version": 1, "title": title, "models": models,
           "classes": classes_to_dicts(classes), "conventions": CONVENTIONS, "rows": rows,
           "results": dict(results)}
    write_json(doc, out / ABLATION_FILES["json"], overwrite=overwrite)
    return write_bytes_atomic("\n".join(lines).encode("utf-8"), out / ABLATION_FILES["md"], overwrite=overwrite)
