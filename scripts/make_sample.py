#!/usr/bin/env python3
"""Make the bundled sample (Resources/Samples) from one case of the shared SPIDER t2_SPACE subset.

    python scripts/make_sample.py ../shared/data/spider-t2space spider_018 -o Resources/Samples

Crops rows 0-599 (superior-inferior) and columns 96-511 (anterior soft tissue removed) of the
512x640 sagittal slices and keeps every slice; the label map is cropped the same way. Slicing
a SimpleITK image keeps its physical geometry (the origin moves with the crop).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spineseg.io import write_image  # noqa: E402

ROWS = (0, 600)  # y: superior -> inferior
COLUMNS = (96, 512)  # x: anterior -> posterior


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("case")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    for kind in ("image", "label"):
        src = args.data / f"{args.case}_{kind}.nii.gz"
        image = sitk.ReadImage(str(src))
        cropped = image[COLUMNS[0]:COLUMNS[1], ROWS[0]:ROWS[1], :]
        out = write_image(cropped, args.output / src.name, overwrite=args.overwrite)
        print(f"{out}: size {cropped.GetSize()}, {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
