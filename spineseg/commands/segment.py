"""``spineseg segment``: label spine structures in MR volumes with a SpineSeg model.

All-or-nothing: every input and output is checked before the first case runs, and
on an error or a cancel the outputs this run already wrote are removed again and
the files they replaced (``--overwrite``) put back, so a failed run leaves the
output location as it found it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from spineseg.inference.backends import BACKENDS
from spineseg.progress import CancelFlag

NAME = "segment"
HELP = "Segment vertebrae, discs and the spinal canal in sagittal MR volumes."
SUFFIX = "_seg"
PROB_SUFFIX = "_probabilities"
OVERLAY_SUFFIX = "_overlay.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spineseg.inference.sliding import DEFAULT_OVERLAP
    from spineseg.inference import InferenceOptions

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images or DICOM series folders")
    parser.add_argument("-o", "--output", required=True,
                        help="output label file (one input) or folder (outputs named <input>_seg.nii.gz)")
    parser.add_argument("--model", help="model folder (model.json + weights); default: the bundled model")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch (PyTorch) or onnx (ONNX Runtime, no PyTorch needed; run 'spineseg export' first)")
    parser.add_argument("--n4", action=argparse.BooleanOptionalAction, default=None,
                        help="N4 bias-field correction (default: what the model was trained with)")
    parser.add_argument("--n4-shrink", type=int, metavar="N", help="N4 shrink factor (default: the model's)")
    parser.add_argument("--window", type=int, nargs=3, metavar=("D", "H", "W"),
                        help="sliding-window size in slices and in-plane voxels (default: the model's training window)")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                        help=f"window overlap fraction (default {DEFAULT_OVERLAP:g})")
    parser.add_argument("--tile", action="store_true",
                        help="run whole in-plane slabs instead of windows (faster on a GPU; more memory)")
    parser.add_argument("--batch", type=int, default=4, help="windows per batch (default 4)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast on the GPU (default on; ignored on the CPU)")
    parser.add_argument("--binary", action="store_true", help="write one 'spine' label (union of all classes)")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write the class probabilities (<output>_probabilities.nii.gz, one channel per class)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <output>_overlay.png: one slice with the labels over the image "
                             "(needs matplotlib: pip install 'spineseg[report]')")
    parser.add_argument("--keep-largest", action="store_true", help="keep the largest connected component of each class")
    parser.add_argument("--levels", action="store_true",
                        help="also write the per-level read-out beside each label map: <output>.levels.nii.gz "
                             "(vertebrae and discs named from the sacrum up), .levels.json, .measurements.csv and "
                             "Slicer's .seg.nrrd (needs slicerio: pip install 'spineseg[levels]')")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation: average the predictions of the volume as stored and "
                             "mirrored left-right, and report where they disagree (default: "
                             + ("on" if InferenceOptions.tta else "off") + "; twice the inference time)")
    parser.add_argument("--tta-inplane", action="store_true",
                        help="flip TTA with two more passes, mirrored superior-inferior and anterior-posterior "
                             "(implies --tta; four network passes instead of two; the uncertainty stays that "
                             "of the left-right pair)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--json", action="store_true", help="print JSON lines (progress, done, error) on stdout")


def _probability_path(label_path: Path) -> Path:
    from spineseg.io import image_extension, strip_image_extension

    ext = image_extension(label_path) or ".nii.gz"
    return label_path.with_name(strip_image_extension(label_path) + PROB_SUFFIX + ext)


def _overlay_path(label_path: Path) -> Path:
    from spineseg.io import strip_image_extension

    return label_path.with_name(strip_image_extension(label_path) + OVERLAY_SUFFIX)


Planned = Tuple[Path, Optional[Path], Optional[Path]]  # label map, probabilities, overlay PNG


def plan_outputs(inputs: List[Path], output: str, *, probabilities: bool, overwrite: bool,
                 overlay: bool = False) -> List[Planned]:
    """Output label (probability, overlay) paths per input; checks they can all be written before any work."""
    from spineseg.errors import InputError
    from spineseg.io import check_writable, image_extension, refuse_input_as_output, strip_image_extension

    out = Path(output)
    if len(inputs) == 1 and image_extension(out) and not out.is_dir():
        labels = [out]
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: with {len(inputs)} inputs the output must be a folder; give a folder name")
        if image_extension(out):
            raise InputError(f"{out}: with several inputs the output must be a folder, not an image file name")
        labels = [out / f"{strip_image_extension(p) if p.is_file() else p.name}{SUFFIX}.nii.gz" for p in inputs]
    seen: Dict[Path, Path] = {}
    for src, dst in zip(inputs, labels):
        if dst in seen:
            raise InputError(f"{src} and {seen[dst]} would both be written to {dst}; segment them into separate folders")
        seen[dst] = src
    planned = [(lbl, _probability_path(lbl) if probabilities else None, _overlay_path(lbl) if overlay else None)
               for lbl in labels]
    for entry in planned:
        for path in entry:
            if path is None:
                continue
            refuse_input_as_output([path], list(inputs))
            check_writable(path, overwrite=overwrite, image=path.suffix != ".png")
    return planned


def _model_path(args: argparse.Namespace) -> Path:
    from spineseg.errors import InputError

    if args.model:
        path = Path(args.model)
        if not path.exists():
            raise InputError(f"{path}: model not found; give a SpineSeg model folder (with model.json)")
        return path
    from spineseg import modelfile

    default = modelfile.default_model_path()
    if default is None:
        raise InputError("no model given and no bundled default model is installed; pass --model DIR "
                         "(a folder with model.json, e.g. made by 'spineseg train')")
    return Path(default)


def run(args: argparse.Namespace) -> int:
    from spineseg.progress import Reporter

    reporter = Reporter(json_mode=args.json, label="segment")
    from spineseg.io import Replacements

    cancel = CancelFlag()
    written = Replacements()
    created_dirs: List[Path] = []
    try:
        results = _segment_all(args, reporter, cancel, written, created_dirs)
    except BaseException:
        _rollback(written, created_dirs)  # the CLI reports the error (and its JSON event)
        raise
    else:
        written.commit()
    finally:
        cancel.restore()
        reporter.close()
    if args.json:
        reporter.event("done", outputs=results)
    else:
        for r in results:
            print(f"{r['input']} -> {r['output']} ({r['seconds']:.1f} s)")
    sys.stdout.flush()
    return 0


def _rollback(written, created_dirs: List[Path]) -> None:
    written.rollback()  # earlier results put back, new files removed
    for folder in reversed(created_dirs):
        try:
            folder.rmdir()  # only if still empty
        except OSError:
            pass


def _segment_all(args, reporter, cancel: CancelFlag, written, created_dirs: List[Path]) -> List[Dict[str, Any]]:
    from spineseg.errors import InputError
    from spineseg.inference import InferenceOptions, load, segment_image, tta
    from spineseg.io import image_extension, list_inputs, read_image, refuse_input_as_output, write_image

    options = InferenceOptions(
        device=args.device, backend=args.backend, n4=args.n4, n4_shrink=args.n4_shrink,
        window=tuple(args.window) if args.window else None, overlap=args.overlap, tile=args.tile, batch=args.batch,
        amp=args.amp, binary=args.binary, probabilities=args.probabilities, keep_largest=args.keep_largest,
        tta=args.tta_inplane or (InferenceOptions.tta if args.tta is None else args.tta),
        tta_flips=tta.INPLANE_FLIPS if args.tta_inplane else None)
    if args.tta_inplane and args.tta is False:
        raise InputError("--tta-inplane and --no-tta contradict each other; drop one of them")
    options.check()
    inputs = list_inputs(args.inputs)
    refuse_input_as_output([args.output], [a for a in args.inputs if Path(a).is_dir()])  # results among the images
    out_root = Path(args.output)
    single_file = len(inputs) == 1 and bool(image_extension(out_root)) and not out_root.is_dir()
    folder = out_root.parent if single_file else out_root
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if args.overlay:
        from spineseg.report import matplotlib_available
        from spineseg.errors import InputError

        if not matplotlib_available():
            raise InputError("--overlay needs matplotlib; install it with: pip install 'spineseg[report]'")
    planned = plan_outputs(inputs, args.output, probabilities=args.probabilities, overwrite=args.overwrite,
                           overlay=args.overlay)
    level_plans: List[Any] = [None] * len(planned)
    if getattr(args, "levels", False):
        from spineseg.levels.outputs import plan_level_outputs

        level_plans = plan_level_outputs([p[0] for p in planned], inputs, overwrite=args.overwrite)
    created_dirs.extend(reversed(missing))  # made by the first write; the rollback removes them if empty
    model_path = _model_path(args)
    checked = [read_image(src) for src in inputs[:1]]  # every input is checked before the first case runs;
    for src in inputs[1:]:  # one image held at a time: the first is kept for its case
        read_image(src)
    cancel.install()
    backend = load(model_path, options)
    if level_plans[0] is not None:
        from spineseg.levels.outputs import check_classes

        check_classes([] if args.binary else backend.info.classes)
    results = []
    n = len(inputs)
    for i, (src, (label_path, prob_path, overlay_path), level_paths) in enumerate(zip(inputs, planned, level_plans)):
        t0 = time.perf_counter()
        image = checked.pop() if checked else read_image(src)

        def progress(fraction: float, message: str, _i=i, _name=src.name) -> None:
            reporter((_i + fraction) / n, f"{_name}: {message}" if n > 1 else message)

        result = segment_image(image, backend, options=options, progress=progress, cancel=cancel)
        if cancel():
            from spineseg.errors import Cancelled

            raise Cancelled("segmentation cancelled")
        written.add(label_path)
        write_image(result.label, label_path, overwrite=args.overwrite)
        if prob_path is not None and result.probabilities is not None:
            written.add(prob_path)
            write_image(result.probabilities, prob_path, overwrite=args.overwrite)
        levels = None
        if level_paths is not None:
            from spineseg.levels import read_levels
            from spineseg.levels.outputs import write_level_outputs
            from spineseg.levels.review import review_case

            levels = read_levels(result.label)
            levels.review = review_case(levels, result.label, result.uncertainty)
            for path in level_paths.all():
                written.add(path)  # before writing: a replaced file is kept for the rollback
            write_level_outputs(levels, result.label, level_paths, overwrite=args.overwrite, written=[])
        if overlay_path is not None:
            written.add(overlay_path)
            _write_overlay(image, result, overlay_path, title=src.name, overwrite=args.overwrite, levels=levels)
        entry: Dict[str, Any] = {
            "input": str(src), "output": str(label_path),
            "classes": [c.to_dict() for c in result.classes],
            "seconds": round(time.perf_counter() - t0, 3),
            "backend": backend.name, "device": str(backend.device),
        }
        if prob_path is not None:
            entry["probabilities"] = str(prob_path)
        if overlay_path is not None:
            entry["overlay"] = str(overlay_path)
        if levels is not None:
            entry["levels"] = {"files": [str(p) for p in level_paths.all()], "levels_reliable": levels.levels_reliable,
                               "levels_reasons": levels.levels_reasons, "review": levels.review.to_dict()}
        if result.uncertainty is not None:
            entry["uncertainty"] = round(result.uncertainty, 5)
        if result.warnings:
            entry["warnings"] = result.warnings
        results.append(entry)
    reporter(1.0, "done")
    return results


def _write_overlay(image, result, path: Path, *, title: str, overwrite: bool, levels=None) -> None:
    """The input and its labels on one slice, in the canonical frame (superior up, anterior left);
    with the per-level read-out, each level in its own colour with its name."""
    import SimpleITK as sitk

    from spineseg.geometry import CanonicalFrame
    from spineseg.report import plot_segmentation

    frame = result.frame or CanonicalFrame.of(image, warn=False)
    canon_image = frame.to_canonical(sitk.GetArrayFromImage(image))
    if levels is not None:
        from spineseg.levels.segments import level_classes

        plot_segmentation(canon_image, levels.canonical_labels, level_classes(levels.structures), path, title=title,
                          spacing=frame.canonical_spacing, overwrite=overwrite, label_names=True)
        return
    canon_label = frame.to_canonical(sitk.GetArrayFromImage(result.label))
    plot_segmentation(canon_image, canon_label, result.classes, path, title=title,
                      spacing=frame.canonical_spacing, overwrite=overwrite)
