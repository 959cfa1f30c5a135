"""``spineseg info``: what SpineSeg sees in a volume (geometry, slice axis, intensities)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Dict

import numpy as np

from spineseg.geometry import CanonicalFrame, orientation_code
from spineseg.io import list_inputs, read_image

NAME = "info"
HELP = "Print size, spacing, orientation, detected slice axis and intensity statistics of images."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images or DICOM series folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")


def describe(image) -> Dict[str, Any]:
    """Geometry and intensity summary of one image, as plain JSON-ready values."""
    import SimpleITK as sitk

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = CanonicalFrame.of(image)
    array = sitk.GetArrayViewFromImage(image)
    values = array.astype(np.float64, copy=False)
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    spacing = image.GetSpacing()
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [round(s, 6) for s in spacing],
        "origin_mm": [round(o, 4) for o in image.GetOrigin()],
        "direction": [round(d, 6) for d in image.GetDirection()],
        "orientation": orientation_code(image),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "slice_axis": "xyz"[frame.axes[0]],
        "slices": frame.shape[0],
        "canonical_shape_dhw": list(frame.shape),
        "canonical_spacing_dhw_mm": [round(s, 6) for s in frame.canonical_spacing],
        "anisotropy": round(max(spacing) / sorted(spacing)[1], 3),
        "intensity": {
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "p1": float(p1),
            "median": float(p50),
            "p99": float(p99),
        },
        "warnings": [str(w.message) for w in caught],
    }


def _format(path: str, d: Dict[str, Any]) -> str:
    it = d["intensity"]
    lines = [
        f"{path}",
        f"  size            {' x '.join(map(str, d['size']))} ({d['pixel_type']})",
        f"  spacing         {' x '.join(f'{s:g}' for s in d['spacing_mm'])} mm (anisotropy {d['anisotropy']:g})",
        f"  origin          {', '.join(f'{o:g}' for o in d['origin_mm'])} mm",
        f"  orientation     {d['orientation']}",
        f"  slice axis      {d['slice_axis']} ({d['slices']} slices)",
        f"  canonical DxHxW {' x '.join(map(str, d['canonical_shape_dhw']))} at "
        f"{' x '.join(f'{s:g}' for s in d['canonical_spacing_dhw_mm'])} mm",
        f"  intensity       min {it['min']:.4g}  p1 {it['p1']:.4g}  median {it['median']:.4g}  "
        f"p99 {it['p99']:.4g}  max {it['max']:.4g}  mean {it['mean']:.4g}  std {it['std']:.4g}",
    ]
    lines += [f"  warning         {w}" for w in d["warnings"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    paths = list_inputs(args.inputs)
    for path in paths:
        d = describe(read_image(path))
        if args.json:
            print(json.dumps({"input": str(path), **d}))
        else:
            print(_format(str(path), d))
    sys.stdout.flush()
    return 0
