"""The per-level read-out as SpineSeg UNet shows it: the measurements table, the review lines, level positions.

``spineseg segment --levels`` writes ``<output>.levels.json`` (:meth:`spineseg.levels.result.LevelsResult.to_dict`);
this module reads it and turns it into what the panel shows, without Slicer: the columns of
the measurements table (names that scripts look up, titles and units that people read), one
row per structure, and the review and level-name sentences. The module writes the rows into a
``vtkMRMLTableNode`` and jumps the slice views to a row's centroid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spineseg.errors import InputError
from spineseg.labels import ClassInfo
from spineseg.levels.outputs import check_classes
from spineseg.levels.result import LEVELS_FORMAT_VERSION, MEASUREMENT_COLUMNS


@dataclass(frozen=True)
class Column:
    """One column of the measurements table: ``name`` (stable, for scripts), ``title`` and ``unit`` (for people)."""

    name: str
    title: str
    unit: str
    type: str  # a vtkMRMLTableNode column type: "string", "double" or "int"
    description: str


#: (title, unit, description) of each measurement, keyed by the read-out's keys (``MEASUREMENT_COLUMNS``)
_MEASUREMENT_TITLES: Dict[str, Tuple[str, str, str]] = {
    "anterior_height_mm": ("Anterior height", "mm", "height at 15% of the AP chord from its anterior end"),
    "middle_height_mm": ("Middle height", "mm", "height at 50% of the AP chord"),
    "posterior_height_mm": ("Posterior height", "mm", "height at 85% of the AP chord from its anterior end"),
    "ap_depth_mm": ("AP depth", "mm", "vertebral body: anterior-posterior chord through the centroid"),
    "canal_ap_mm": ("Canal AP diameter", "mm", "spinal canal's anterior-posterior diameter at this level"),
    "volume_mm3": ("Volume", "mm3", "voxel count times voxel volume"),
}

#: centroid columns: RAS of the input volume (before any parent transform), where a row click jumps to
CENTROID_COLUMNS: Tuple[str, str, str] = ("centroid_r_mm", "centroid_a_mm", "centroid_s_mm")

TABLE_COLUMNS: Tuple[Column, ...] = (
    Column("name", "Structure", "", "string", "level name, counted from the sacrum up (L4, L4-L5, spinal canal)"),
    Column("kind", "Kind", "", "string", "vertebra, disc or canal"),
    *(Column(key, title, unit, "double", description)
      for key, (title, unit, description) in ((k, _MEASUREMENT_TITLES[k]) for k in MEASUREMENT_COLUMNS)),
    Column("label", "Label value", "", "int", "value in the per-level label map (VerSe vertebrae, 100 + vertebra "
           "above for discs, 201 canal)"),
    Column("voxels", "Voxels", "", "int", "number of voxels of the structure"),
    *(Column(key, f"Centroid {axis}", "mm", "double", f"centroid, {axis} coordinate in the input volume's RAS")
      for key, axis in zip(CENTROID_COLUMNS, "RAS")),
    Column("note", "Note", "", "string", "why a structure was not measured"),
)

#: the note of a structure cut by the edge of the field of view (the read-out does not measure it)
PARTIAL_NOTE = "cut by the field of view: not measured"


def read_levels_file(path: Path) -> Dict[str, Any]:
    """``<output>.levels.json`` as a dict; ValueError (one sentence) when it is not that file's format."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not read the per-level read-out {Path(path).name}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != "spineseg-levels":
        raise ValueError(f"{Path(path).name} is not a SpineSeg per-level read-out")
    if data.get("format_version") != LEVELS_FORMAT_VERSION:
        raise ValueError(f"{Path(path).name} has read-out format version {data.get('format_version')}; this "
                         f"SpineSeg reads version {LEVELS_FORMAT_VERSION}")
    return data


def levels_unavailable_reason(classes: Sequence[Any]) -> Optional[str]:
    """Why a model's classes cannot give a per-level read-out (None: they can); the same test as the CLI's."""
    infos = [c if isinstance(c, ClassInfo) else ClassInfo.from_dict(dict(c)) for c in classes]
    try:
        check_classes(infos)
    except InputError:
        return ("the per-level read-out needs a model with separate vertebra, intervertebral disc and spinal "
                "canal classes; this model labels " + (", ".join(c.name for c in infos) or "nothing"))
    return None


def lps_to_ras(point: Sequence[float]) -> Tuple[float, float, float]:
    """A physical point of the core (LPS, as ITK) in Slicer's RAS: x and y change sign."""
    x, y, z = (float(v) for v in point)
    return (-x, -y, z)


def table_rows(levels: Dict[str, Any], voxel_volume_mm3: float) -> List[List[Any]]:
    """One row per structure (cranial first, canal last), values in :data:`TABLE_COLUMNS` order;
    None where a value was not measured. Volume is voxels x voxel volume for every structure (the
    read-out's own disc and canal volumes are defined so)."""
    rows = []
    for s in levels.get("structures", []):
        m = s.get("measurements") or {}
        values: Dict[str, Any] = {"name": s["name"], "kind": s["kind"], "label": int(s["label"]),
                                  "voxels": int(s["voxels"]),
                                  "note": PARTIAL_NOTE if s.get("partial") else ""}
        for key in MEASUREMENT_COLUMNS:
            values[key] = None if m.get(key) is None else float(m[key])
        values["volume_mm3"] = int(s["voxels"]) * float(voxel_volume_mm3)
        values.update(zip(CENTROID_COLUMNS, lps_to_ras(s["centroid_mm"])))
        rows.append([values[c.name] for c in TABLE_COLUMNS])
    return rows


def review_text(levels: Dict[str, Any]) -> str:
    """The review line: the flag and its reasons, or why there is none."""
    review = levels.get("review") or {}
    flag, reasons, uncertainty = review.get("flag"), list(review.get("reasons") or []), review.get("uncertainty")
    if flag is None:
        return "Review not assessed."
    if flag:
        return "Review recommended: " + "; ".join(reasons) + "." if reasons else "Review recommended."
    if uncertainty is None:
        return "No review flag (plausibility checks only: flip test-time augmentation was off)."
    return f"No review flag (flipped predictions disagree on {100 * float(uncertainty):.1f}% of the segmented voxels)."


def levels_text(levels: Dict[str, Any]) -> str:
    """The level-name line: what the names are counted from, or why they may be wrong (reasons the
    review line already gives are not repeated)."""
    if levels.get("levels_reliable"):
        anchor = levels.get("anchor") or "sacrum"
        return f"Level names reliable (counted from the {anchor})."
    reasons = list(levels.get("levels_reasons") or [])
    reviewed = list((levels.get("review") or {}).get("reasons") or [])
    if reasons and all(any(r in given for given in reviewed) for r in reasons):
        return "Level names unreliable (reasons above)."
    return "Level names unreliable: " + "; ".join(reasons) + "." if reasons else "Level names unreliable."


def summary_text(levels: Dict[str, Any]) -> str:
    """What a read-out found, in a few words: "9 vertebrae (T8 to L5), 9 discs, spinal canal"."""
    structures = levels.get("structures", [])
    parts = []
    for kind, plural in (("vertebra", "vertebrae"), ("disc", "discs")):
        names = [s["name"] for s in structures if s["kind"] == kind]
        if names:
            word = kind if len(names) == 1 else plural
            parts.append(f"{len(names)} {word} ({names[0]} to {names[-1]})" if len(names) > 1
                         else f"1 {word} ({names[0]})")
    parts += [s["name"] for s in structures if s["kind"] == "canal"]
    return ", ".join(parts) or "no structures"
