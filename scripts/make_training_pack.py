#!/usr/bin/env python3
"""A compact copy of a training set for a GPU machine that only receives a few tens of MB.

    python scripts/make_training_pack.py ../shared/data/spider-t2space -o .traincache/spider-0.9mm \\
        --inplane-mm 0.9 --margin-mm 20

Each case is cropped in-plane to its labels' bounding box plus a margin (every slice kept),
resampled in-plane to ``--inplane-mm`` (image linear, labels nearest; the slice axis is never
resampled) and written as compressed NIfTI pairs that ``spineseg train``/``cv`` read as they are.
Images keep their pixel type (uint8 stays uint8, rounded), which is what keeps the pack small.
Prints one line per case and the total size.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spineseg.errors import InputError  # noqa: E402
from spineseg.geometry import slice_axis  # noqa: E402
from spineseg.io import write_image  # noqa: E402
from spineseg.training.data import find_cases, read_case  # noqa: E402


def label_box(label: sitk.Image, margin_mm: float, inplane: Sequence[int]) -> Tuple[list, list]:
    """(start, size) in image axes: the labels' bounding box plus a margin in-plane; all slices."""
    arr = sitk.GetArrayViewFromImage(label)  # z, y, x
    nz = np.nonzero(arr)
    start = [0, 0, 0]
    size = list(label.GetSize())
    if not len(nz[0]):
        return start, size
    for axis in inplane:
        np_axis = 2 - axis
        lo, hi = int(nz[np_axis].min()), int(nz[np_axis].max()) + 1
        pad = int(round(margin_mm / label.GetSpacing()[axis]))
        start[axis] = max(0, lo - pad)
        size[axis] = min(label.GetSize()[axis], hi + pad) - start[axis]
    return start, size


def resample_inplane_image(image: sitk.Image, inplane: Sequence[int], mm: float, labels: bool) -> sitk.Image:
    """Resample the in-plane axes to ``mm`` over the same field of view; the slice axis is untouched."""
    spacing = list(image.GetSpacing())
    size = list(image.GetSize())
    new_spacing, new_size = list(spacing), list(size)
    for axis in inplane:
        new_size[axis] = max(1, int(round(size[axis] * spacing[axis] / mm)))
        new_spacing[axis] = size[axis] * spacing[axis] / new_size[axis]
    # same extent: the first voxel centre moves by half the change of voxel size, along each axis
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    shift = np.array([(new_spacing[a] - spacing[a]) / 2.0 for a in range(3)])
    origin = np.asarray(image.GetOrigin()) + direction @ shift
    out = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkNearestNeighbor if labels else sitk.sitkLinear,
                        tuple(origin), tuple(new_spacing), image.GetDirection(), 0,
                        image.GetPixelID() if labels else sitk.sitkFloat32)
    if not labels and image.GetPixelID() != sitk.sitkFloat32:
        out = sitk.Cast(sitk.Round(out), image.GetPixelID())
    return out


def pack(data: Path, out: Path, *, inplane_mm: Optional[float], margin_mm: float, overwrite: bool) -> int:
    cases = find_cases(data)
    total = 0
    for case in cases:
        image, label, _ = read_case(case, [1, 2, 3])
        s = slice_axis(image, warn=False)
        inplane = [a for a in range(3) if a != s]
        start, size = label_box(label, margin_mm, inplane)
        roi = sitk.RegionOfInterestImageFilter()
        roi.SetIndex(start)
        roi.SetSize(size)
        image, label = roi.Execute(image), roi.Execute(label)
        if inplane_mm:
            image = resample_inplane_image(image, inplane, inplane_mm, labels=False)
            label = resample_inplane_image(label, inplane, inplane_mm, labels=True)
        written = [write_image(image, out / f"{case.id}_image.nii.gz", overwrite=overwrite),
                   write_image(label, out / f"{case.id}_label.nii.gz", overwrite=overwrite)]
        nbytes = sum(p.stat().st_size for p in written)
        total += nbytes
        print(f"{case.id}: {image.GetSize()} at {tuple(round(v, 3) for v in image.GetSpacing())} mm, "
              f"{nbytes / 2 ** 20:.2f} MiB")
    print(f"{len(cases)} cases, {total / 2 ** 20:.1f} MiB in {out}")
    return total


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="folder of <case>_image/<case>_label pairs or a dataset.json")
    p.add_argument("-o", "--output", type=Path, required=True, help="pack folder (e.g. under .traincache/)")
    p.add_argument("--inplane-mm", type=float, help="in-plane spacing to resample to (default: keep)")
    p.add_argument("--margin-mm", type=float, default=20.0, help="context kept around the labels (default 20)")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier pack")
    args = p.parse_args(argv)
    try:
        if args.inplane_mm is not None and args.inplane_mm <= 0:
            raise InputError(f"--inplane-mm {args.inplane_mm}: use a positive spacing such as 0.9")
        pack(args.data, args.output, inplane_mm=args.inplane_mm, margin_mm=args.margin_mm, overwrite=args.overwrite)
    except InputError as exc:
        print(f"make_training_pack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
