"""``spineseg n4``: N4 bias-field correction of one image (fast: fitted on a shrunk copy)."""
from __future__ import annotations

import argparse
from typing import List

from spineseg.errors import InputError
from spineseg.io import check_writable, read_image, refuse_input_as_output, write_image
from spineseg.preprocessing import DEFAULT_CONVERGENCE, DEFAULT_ITERATIONS, DEFAULT_SHRINK, n4_correct
from spineseg.progress import Reporter

NAME = "n4"
HELP = "N4 bias-field correction: fit the field on a shrunk copy, apply it at full resolution."


def _iterations(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated iteration counts such as 50,50,50, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive iteration counts, one per fitting level, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="image file or DICOM series folder")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="corrected image (.nii.gz, .nii, .nrrd or .mha), float32")
    parser.add_argument("--shrink", type=_positive_int, default=DEFAULT_SHRINK,
                        help=f"fit on a copy shrunk by this factor along every axis "
                             f"(1: full resolution, very slow; default {DEFAULT_SHRINK})")
    parser.add_argument("--iterations", type=_iterations, default=list(DEFAULT_ITERATIONS),
                        help="iterations per fitting level, comma-separated "
                             f"(default {','.join(map(str, DEFAULT_ITERATIONS))})")
    parser.add_argument("--convergence", type=_non_negative_float, default=DEFAULT_CONVERGENCE,
                        help=f"convergence threshold (default {DEFAULT_CONVERGENCE:g})")
    parser.add_argument("--mask", metavar="PATH", help="fit only inside this mask (non-zero voxels) instead of the "
                                                        "automatic foreground mask")
    parser.add_argument("--no-mask", action="store_true", help="fit over all voxels (no foreground mask)")
    parser.add_argument("--bias-field", metavar="PATH", help="also write the multiplicative bias field here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--json", action="store_true", help="progress and result as JSON lines on stdout")


def run(args: argparse.Namespace) -> int:
    import time

    if args.mask and args.no_mask:
        raise InputError("--mask and --no-mask contradict each other; give one of them")
    refuse_input_as_output([args.output, args.bias_field], [args.input, args.mask])
    output = check_writable(args.output, overwrite=args.overwrite)
    field_path = check_writable(args.bias_field, overwrite=args.overwrite) if args.bias_field else None
    if field_path is not None and field_path.resolve() == output.resolve():
        raise InputError(f"{output}: --bias-field and -o name the same file; give two different names")
    image = read_image(args.input)
    mask = read_image(args.mask, kind="label") if args.mask else None
    if mask is not None and mask.GetSize() != image.GetSize():
        raise InputError(f"{args.mask}: mask size {mask.GetSize()} differs from the image size {image.GetSize()}; "
                         "give a mask on the image's grid")
    reporter = Reporter(json_mode=args.json, label="N4")
    t0 = time.perf_counter()
    try:
        corrected, bias = n4_correct(image, shrink=args.shrink, iterations=args.iterations,
                                     convergence=args.convergence, mask=mask, use_mask=not args.no_mask,
                                     progress=reporter, return_bias_field=True)
    finally:
        reporter.close()
    existed = output.exists()
    write_image(corrected, output, overwrite=args.overwrite)
    if field_path is not None:
        try:
            write_image(bias, field_path, overwrite=args.overwrite)
        except InputError:
            if not existed:  # no partial output: both files or neither
                output.unlink()
            raise
    seconds = round(time.perf_counter() - t0, 3)
    reporter.event("done", outputs=[{"input": str(args.input), "output": str(output),
                                     "bias_field": None if field_path is None else str(field_path),
                                     "seconds": seconds}])
    return 0
