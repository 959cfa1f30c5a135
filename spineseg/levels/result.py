"""The read-out's result: one entry per structure, the reliability of the names, and the review hook.

This is the shape of ``<output>.levels.json`` (:meth:`LevelsResult.to_dict`) and of the
rows of ``<output>.measurements.csv`` (:meth:`LevelsResult.csv_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

#: JSON format version of ``.levels.json``
LEVELS_FORMAT_VERSION = 1

#: measurement keys per kind, in CSV column order (all in mm, volume in mm^3)
VERTEBRA_MEASUREMENTS: Tuple[str, ...] = (
    "anterior_height_mm", "middle_height_mm", "posterior_height_mm", "ap_depth_mm", "canal_ap_mm")
DISC_MEASUREMENTS: Tuple[str, ...] = (
    "anterior_height_mm", "middle_height_mm", "posterior_height_mm", "volume_mm3", "canal_ap_mm")
CANAL_MEASUREMENTS: Tuple[str, ...] = ("volume_mm3",)
MEASUREMENT_COLUMNS: Tuple[str, ...] = tuple(dict.fromkeys(VERTEBRA_MEASUREMENTS + DISC_MEASUREMENTS))


@dataclass
class Structure:
    """One named structure of the per-level label map."""

    label: int
    name: str
    kind: str  # "vertebra", "disc" or "canal"
    voxels: int
    centroid_mm: Tuple[float, float, float]  # physical (LPS) point of the input image
    measurements: Dict[str, Optional[float]] = field(default_factory=dict)  # None: could not be measured
    partial: bool = False  # cut by the edge of the field of view in-plane: not measured

    def to_dict(self) -> Dict[str, Any]:
        return {"label": int(self.label), "name": self.name, "kind": self.kind, "voxels": int(self.voxels),
                "centroid_mm": [round(float(c), 3) for c in self.centroid_mm], "partial": bool(self.partial),
                "measurements": {k: (None if v is None else round(float(v), 2)) for k, v in self.measurements.items()}}


@dataclass
class Review:
    """Whether a person should check this case first, and why.

    Filled by the review stage (flip test-time augmentation plus plausibility); the
    read-out alone leaves ``flag`` None, meaning "not assessed", never "fine".
    """

    flag: Optional[bool] = None
    reasons: List[str] = field(default_factory=list)
    uncertainty: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"flag": self.flag, "reasons": list(self.reasons),
                "uncertainty": None if self.uncertainty is None else float(self.uncertainty)}


@dataclass
class LevelsResult:
    """Per-level label map (canonical (D, H, W) array) and what is known about each structure.

    ``anchor`` says what the names are counted from: ``"sacrum"`` (a sacrum instance),
    ``"L5-S1 disc"`` (the lowest disc, with a body above and the unlabelled sacrum below)
    or ``"none"``. ``levels_reliable`` is False whenever the names are a guess; then
    ``levels_reasons`` says why.
    """

    canonical_labels: np.ndarray
    structures: List[Structure]
    levels_reliable: bool
    levels_reasons: List[str]
    anchor: str
    review: Review = field(default_factory=Review)

    def structure(self, name: str) -> Optional[Structure]:
        return next((s for s in self.structures if s.name == name), None)

    def names(self, kind: Optional[str] = None) -> List[str]:
        """Structure names, cranial to caudal within a kind (canal last)."""
        return [s.name for s in self.structures if kind is None or s.kind == kind]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": "spineseg-levels",
            "format_version": LEVELS_FORMAT_VERSION,
            "levels_reliable": bool(self.levels_reliable),
            "levels_reasons": list(self.levels_reasons),
            "anchor": self.anchor,
            "review": self.review.to_dict(),
            "structures": [s.to_dict() for s in self.structures],
        }

    def csv_header(self) -> List[str]:
        return ["label", "name", "kind", "voxels", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "partial",
                *MEASUREMENT_COLUMNS]

    def csv_rows(self) -> List[List[Any]]:
        rows = []
        for s in self.structures:
            m = s.measurements
            rows.append([s.label, s.name, s.kind, s.voxels, *(round(float(c), 3) for c in s.centroid_mm),
                         "yes" if s.partial else "no",
                         *(None if m.get(k) is None else round(float(m[k]), 2) for k in MEASUREMENT_COLUMNS)])
        return rows
