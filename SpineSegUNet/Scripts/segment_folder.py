"""Segment every image in a folder with the SpineSeg UNet module's logic, without the GUI.

    Slicer --no-main-window --python-script SpineSegUNet/Scripts/segment_folder.py \
        --input DIR --output DIR [--model MODEL_DIR] [--device auto|cpu|cuda] \
        [--backend onnx|torch] [--no-n4] [--n4-shrink N] [--no-levels] [--tta] [--overwrite]

Writes ``<case>.seg.nrrd`` per input (Slicer segmentation file: segment names,
colours and terminology included). With Levels (on, as in the module, for models with
vertebra, disc and canal classes) the segments are the named levels, and
``<case>.measurements.tsv`` (with its ``.schema.tsv``: titles, units) holds the
measurements table; the review line is printed per case. Exit code 0 when every case
succeeded, 2 for bad arguments or existing outputs (nothing written), 1 when a case failed.
"""
import argparse
import logging
import os
import sys
import tempfile

import slicer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parseArguments(argv):
    parser = argparse.ArgumentParser(prog="segment_folder.py", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="folder of images (NIfTI, NRRD, MHA)")
    parser.add_argument("--output", required=True, help="folder for the <case>.seg.nrrd files")
    parser.add_argument("--model", help="model folder (default: the bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--no-n4", dest="n4", action="store_false", help="skip N4 bias-field correction")
    parser.add_argument("--n4-shrink", type=int, default=None)
    parser.add_argument("--levels", action=argparse.BooleanOptionalAction, default=None,
                        help="one segment per level and the measurements table (default: on when the model has "
                             "vertebra, disc and canal classes)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (gives the review flag its "
                                                            "uncertainty; twice the inference time)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser.parse_args(argv)


def outputPath(outputDir, inputPath, suffix=".seg.nrrd"):
    from spineseg.io import strip_image_extension

    return os.path.join(outputDir, strip_image_extension(inputPath) + suffix)


MEASUREMENTS, SCHEMA = ".measurements.tsv", ".measurements.schema.tsv"


def nodeIds():
    scene = slicer.mrmlScene
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def removeNodesAddedSince(before):
    scene = slicer.mrmlScene
    for nodeId in sorted(nodeIds() - before, reverse=True):
        node = scene.GetNodeByID(nodeId)
        if node is not None:
            scene.RemoveNode(node)


def temporaryPath(target, suffix, temporaries):
    """A new hidden file beside ``target`` ending in ``suffix`` (the storage nodes pick their writer by it),
    recorded in ``temporaries``; unique, so it can never be another case's output."""
    fd, path = tempfile.mkstemp(dir=os.path.dirname(target) or ".", prefix=".spineseg-", suffix=suffix)
    os.close(fd)
    temporaries.append(path)
    return path


def stageSegmentation(segmentation, target, temporaries):
    """Write the segmentation under a temporary name beside ``target`` (storage node kept out of the scene);
    returns [(temporary, target)] for :func:`commit`."""
    storage = segmentation.CreateDefaultStorageNode()
    temporary = temporaryPath(target, ".seg.nrrd", temporaries)
    storage.SetFileName(temporary)
    if not storage.WriteData(segmentation) or not os.path.getsize(temporary):
        raise RuntimeError(f"could not write {target}")
    return [(temporary, target)]


def stageTable(tableNode, target, temporaries):
    """Write the measurements table and its schema (column titles, units; Slicer names it after the
    table: X.tsv, X.schema.tsv) under temporary names."""
    temporary = temporaryPath(target, ".tsv", temporaries)
    schema = temporary[: -len(".tsv")] + ".schema.tsv"
    temporaries.append(schema)
    storage = slicer.vtkMRMLTableStorageNode()
    storage.SetFileName(temporary)
    if not storage.WriteData(tableNode) or not os.path.getsize(temporary):
        raise RuntimeError(f"could not write {target}")
    staged = [(temporary, target)]
    if os.path.isfile(schema):
        staged.append((schema, target[: -len(MEASUREMENTS)] + SCHEMA))
    return staged


def commit(staged):
    """Rename every staged file onto its target, the case's files together: never a half-written case."""
    for temporary, target in staged:
        os.replace(temporary, target)


def discard(temporaries):
    """Remove what a case left under temporary names (after a failure, or a write that was not renamed)."""
    for path in temporaries:
        if os.path.exists(path):
            os.remove(path)


def main(argv):
    # the module folder (this script's parent's parent) holds SpineSegUNet.py
    moduleDir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if moduleDir not in sys.path:
        sys.path.insert(0, moduleDir)
    import SpineSegUNet  # also makes "import spineseg" work from a source checkout
    from spineseg.io import is_image_file
    from spineseg.moduleslogic import model_registry, segment_command

    try:
        args = parseArguments(argv)
    except SystemExit as exc:  # argparse already printed the problem
        return EXIT_OK if exc.code == 0 else EXIT_USAGE

    def fail(message):
        print(f"segment_folder: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    if not os.path.isdir(args.input):
        return fail(f"{args.input}: not a folder; pass the folder that holds the images")
    inputs = sorted(os.path.join(args.input, name) for name in os.listdir(args.input)
                    if is_image_file(os.path.join(args.input, name)))
    if not inputs:
        return fail(f"{args.input}: no NIfTI/NRRD/MHA images found")
    if args.model is None and model_registry.bundled_model_dir() is None:
        return fail("no bundled model in this installation; pass --model MODEL_DIR")
    modelDir = args.model or str(model_registry.bundled_model_dir())
    noLevels = SpineSegUNet.SpineSegUNetLogic.levelsUnavailableReason(modelDir)
    if args.levels and noLevels:
        return fail(f"--levels: {noLevels}; drop --levels or choose such a model")
    levels = noLevels is None if args.levels is None else args.levels
    options = segment_command.SegmentOptions(model=modelDir, device=args.device, backend=args.backend, n4=args.n4,
                                             n4_shrink=args.n4_shrink, levels=levels, tta=args.tta)
    try:
        options.validate()
    except ValueError as exc:
        return fail(str(exc))
    targets = [outputPath(args.output, p) for p in inputs]
    tables = [outputPath(args.output, p, MEASUREMENTS) if levels else None for p in inputs]
    written = targets + [t for t in tables if t] + [t[: -len(MEASUREMENTS)] + SCHEMA for t in tables if t]
    existing = [t for t in written if os.path.exists(t)]
    if existing and not args.overwrite:
        return fail(f"{existing[0]} exists ({len(existing)} outputs in all); pass --overwrite to replace them")
    logic = SpineSegUNet.SpineSegUNetLogic()
    if not logic.ensureDependencies(args.backend, interactive=False, levels=levels):
        return fail(f"Python packages for the {args.backend} backend{' and the per-level read-out' if levels else ''} "
                    "are missing; install them in Slicer first")
    os.makedirs(args.output, exist_ok=True)

    failures = 0
    for index, (inputPath, target, table) in enumerate(zip(inputs, targets, tables), 1):
        print(f"[{index}/{len(inputs)}] {inputPath}", flush=True)
        before = nodeIds()
        temporaries = []
        try:
            volume = SpineSegUNet.loadVolumeFile(inputPath)
            segmentation = logic.segment(volume, options, show3D=False)
            staged = stageSegmentation(segmentation, target, temporaries)
            if table is not None:
                tableNode = SpineSegUNet.measurementsTableOf(segmentation)
                if tableNode is None:
                    raise RuntimeError("the per-level read-out made no measurements table")
                staged += stageTable(tableNode, table, temporaries)
                review, names = SpineSegUNet.readoutLines(tableNode)
                print(f"  {review}" + (f" {names}" if names else ""), flush=True)
            commit(staged)
            print(f"  -> {target}" + (f", {table}" if table else ""), flush=True)
        except Exception as exc:
            failures += 1
            logging.error(f"{inputPath}: {exc}")
            print(f"  failed: {exc}", file=sys.stderr, flush=True)
        finally:
            discard(temporaries)
            # every node this case added (volume, segmentation, their display and storage nodes), so the
            # scene, and memory, stay flat over any number of cases
            removeNodesAddedSince(before)
    print(f"{len(inputs) - failures} of {len(inputs)} segmented", flush=True)
    return EXIT_FAILED if failures else EXIT_OK


# Slicer runs a --python-script file as a script (sys.argv: [script, args...]); no __main__ guard needed.
_exitCode = EXIT_FAILED
try:
    _exitCode = main(sys.argv[1:])
except Exception:
    logging.exception("segment_folder failed")
    _exitCode = EXIT_FAILED
finally:
    slicer.util.exit(_exitCode)
