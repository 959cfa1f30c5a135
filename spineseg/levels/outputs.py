"""Write the read-out beside the 3-class label map: per-level map, JSON, CSV and Slicer's .seg.nrrd.

For ``DIR/case_seg.nii.gz``: ``case_seg.levels.nii.gz``, ``case_seg.levels.json``,
``case_seg.measurements.csv`` and ``case_seg.seg.nrrd``. Every file is written to a
temporary file and renamed (:func:`spineseg.io.write_bytes_atomic`), and the paths are
planned and checked before any work, like the other outputs of ``segment``.
"""
from __future__ import annotations

import csv
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import SimpleITK as sitk

from spineseg.errors import InputError
from spineseg.io import (check_writable, json_safe, refuse_input_as_output, strip_image_extension, write_bytes_atomic,
                         write_image)
from spineseg.labels import CANAL, DISC, VERTEBRA, ClassInfo
from spineseg.levels.readout import levels_image
from spineseg.levels.result import LevelsResult
from spineseg.levels.segments import segment_colours, segment_ids, terminology_entry

LEVELS_SUFFIX = ".levels.nii.gz"
JSON_SUFFIX = ".levels.json"
CSV_SUFFIX = ".measurements.csv"
SEG_SUFFIX = ".seg.nrrd"


@dataclass(frozen=True)
class LevelPaths:
    levels: Path
    json: Path
    csv: Path
    seg: Path

    def all(self) -> List[Path]:
        return [self.levels, self.json, self.csv, self.seg]


def level_paths(label_path: Path) -> LevelPaths:
    """The read-out's files beside a label map (``case_seg.nii.gz`` -> ``case_seg.levels.nii.gz``, ...)."""
    stem = strip_image_extension(label_path)
    folder = Path(label_path).parent
    return LevelPaths(folder / (stem + LEVELS_SUFFIX), folder / (stem + JSON_SUFFIX),
                      folder / (stem + CSV_SUFFIX), folder / (stem + SEG_SUFFIX))


def slicerio_available() -> bool:
    try:
        import slicerio  # noqa: F401
    except ImportError:
        return False
    return True


def plan_level_outputs(labels: Sequence[Path], inputs: Sequence[Path], *, overwrite: bool) -> List[LevelPaths]:
    """The read-out's files for each output label map, checked before any work (like the other outputs)."""
    if not slicerio_available():
        raise InputError("--levels writes Slicer's .seg.nrrd with slicerio; install it with: "
                         "pip install 'spineseg[levels]'")
    planned = [level_paths(p) for p in labels]
    for paths in planned:
        refuse_input_as_output(paths.all(), list(inputs))
        check_writable(paths.levels, overwrite=overwrite)
        for p in (paths.json, paths.csv, paths.seg):
            check_writable(p, overwrite=overwrite, image=False)
    return planned


def check_classes(classes: Sequence[ClassInfo]) -> None:
    """The read-out needs a model with the vertebra, disc and canal classes (values 1, 2, 3)."""
    have = {(c.value, c.name) for c in classes}
    need = {(c.value, c.name) for c in (VERTEBRA, DISC, CANAL)}
    if not need <= have:
        raise InputError("--levels needs a model that labels vertebra (1), intervertebral disc (2) and spinal canal "
                         "(3) separately; this one labels " + ", ".join(c.name for c in classes)
                         + "; drop --levels (or --binary)")


def json_bytes(result: LevelsResult) -> bytes:
    return (json.dumps(json_safe(result.to_dict()), indent=2, allow_nan=False) + "\n").encode("utf-8")


def csv_bytes(result: LevelsResult) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.csv_header())
    for row in result.csv_rows():
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode("utf-8")


def seg_nrrd_bytes(result: LevelsResult, reference: sitk.Image) -> bytes:
    """Slicer's segmentation file (one binary-labelmap layer; label value = per-level value), via slicerio."""
    import slicerio

    image = levels_image(result, reference)
    voxels = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))  # (i, j, k)
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = d @ np.diag(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    segments = []
    for s, sid, colour in zip(result.structures, segment_ids(result.structures), segment_colours(result.structures)):
        idx = np.nonzero(voxels == s.label)
        extent = [int(v) for axis in idx for v in (axis.min(), axis.max())] if idx[0].size else [0, -1, 0, -1, 0, -1]
        segments.append({"id": sid, "name": s.name, "color": [round(c / 255.0, 6) for c in colour],
                         "labelValue": int(s.label), "layer": 0, "extent": extent,
                         "terminology": slicerio.segmentation.terminology_entry_from_string(terminology_entry(s))})
    segmentation = {"voxels": voxels, "ijkToLPS": ijk_to_lps, "segments": segments,
                    "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "levels.seg.nrrd"
        slicerio.write_segmentation(str(path), segmentation)
        return path.read_bytes()


def write_level_outputs(result: LevelsResult, reference: sitk.Image, paths: LevelPaths, *, overwrite: bool,
                        written: List[Path]) -> None:
    """Write the four files, appending each to ``written`` as soon as it exists (for the caller's rollback)."""
    seg = seg_nrrd_bytes(result, reference)  # everything that can fail for want of a library before any file
    write_image(levels_image(result, reference), paths.levels, overwrite=overwrite)
    written.append(paths.levels)
    for data, path in ((json_bytes(result), paths.json), (csv_bytes(result), paths.csv), (seg, paths.seg)):
        write_bytes_atomic(data, path, overwrite=overwrite)
        written.append(path)
