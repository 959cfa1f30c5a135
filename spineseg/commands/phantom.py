"""``spineseg phantom``: write synthetic spine phantoms as training-style image/label pairs."""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import List, Tuple

from spineseg.errors import InputError
from spineseg.io import check_writable, write_image
from spineseg.phantom import ORIENTATIONS, make_phantom

NAME = "phantom"
HELP = "Write synthetic thick-slice T2 lumbar spine phantoms (<case>_image.nii.gz / <case>_label.nii.gz pairs)."

#: largest phantom, in voxels (several float32 copies are held while it is built: 1 GB each at this size)
MAX_VOXELS = 256 * 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("With --count 1 the files are NAME_image.nii.gz and NAME_label.nii.gz; otherwise "
                     "NAME_<i>_image.nii.gz / NAME_<i>_label.nii.gz for i = 0..N-1, phantom i using seed S+i. "
                     "Labels: 1 vertebra, 2 intervertebral disc, 3 spinal canal (0/1 with --binary). "
                     "Exit 0 ok, 2 bad input (nothing written).")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write the pairs into (created if needed)")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="number of phantoms (default 1)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the first phantom (default 0)")
    parser.add_argument("--name", default="phantom", help="case name prefix (default 'phantom')")
    parser.add_argument("--size", type=int, nargs=3, default=(880, 880, 12), metavar=("X", "Y", "Z"),
                        help="voxels along image x y z (default 880 880 12)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.345, 0.345, 4.4), metavar=("X", "Y", "Z"),
                        help="mm along image x y z (default 0.345 0.345 4.4)")
    parser.add_argument("--orientation", default="sagittal", metavar="ORIENTATION",
                        help="sagittal (default), axial, coronal, or 9 comma-separated direction cosines "
                             "(row-major, as SimpleITK's GetDirection); thick slices are along the image axis with the "
                             "largest spacing (z by default)")
    parser.add_argument("--binary", action="store_true", help="one 'spine' label (the union of the three classes)")
    parser.add_argument("--no-bias", action="store_true", help="no bias field")
    parser.add_argument("--noise", type=float, default=0.04, help="Rician noise sigma relative to CSF intensity (default 0.04)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def parse_orientation(text: str):
    """A named orientation, or 9 comma-separated numbers."""
    if text.lower() in ORIENTATIONS:
        return text.lower()
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 9:
        raise InputError(f"--orientation {text!r}: use sagittal, axial, coronal or 9 comma-separated direction cosines")
    return values


def targets(output: Path, name: str, count: int) -> List[Tuple[int, Path, Path]]:
    """(index, image path, label path) of every phantom to write."""
    cases = [name] if count == 1 else [f"{name}_{i}" for i in range(count)]
    return [(i, output / f"{c}_image.nii.gz", output / f"{c}_label.nii.gz") for i, c in enumerate(cases)]


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise InputError(f"--count {args.count}: give at least 1")
    if not _NAME_RE.match(args.name):
        raise InputError(f"--name {args.name!r}: use letters, digits, '.', '_' or '-' (no folders or spaces)")
    if min(args.size) < 1:
        raise InputError(f"--size {' '.join(map(str, args.size))}: give three positive voxel counts")
    if args.size[0] * args.size[1] * args.size[2] > MAX_VOXELS:
        raise InputError(f"--size {' '.join(map(str, args.size))}: {args.size[0] * args.size[1] * args.size[2]:.3g} "
                         f"voxels is more than the {MAX_VOXELS:.3g} a phantom may have (the default is 880 880 12)")
    if not all(s > 0 for s in args.spacing):
        raise InputError(f"--spacing {' '.join(map(str, args.spacing))}: give three positive spacings in mm")
    if not args.noise >= 0:
        raise InputError(f"--noise {args.noise}: give a non-negative number")
    orientation = parse_orientation(args.orientation)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file; give a folder for the phantoms")
    plan = targets(output, args.name, args.count)
    for _, image_path, label_path in plan:  # check every target before writing any
        check_writable(image_path, overwrite=args.overwrite)
        check_writable(label_path, overwrite=args.overwrite)

    for i, image_path, label_path in plan:
        start = time.perf_counter()
        ph = make_phantom(size=tuple(args.size), spacing=tuple(args.spacing), seed=args.seed + i,
                          orientation=orientation, binary=args.binary, bias=not args.no_bias, noise=args.noise)
        write_image(ph.image, image_path, overwrite=args.overwrite)
        write_image(ph.label, label_path, overwrite=args.overwrite)
        print(f"{image_path}  {label_path}  (seed {args.seed + i}, {time.perf_counter() - start:.1f} s)")
        sys.stdout.flush()
    return 0
