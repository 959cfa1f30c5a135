"""Segment every image in a folder with the SpineSeg UNet module's logic, without the GUI.

    Slicer --no-main-window --python-script SpineSegUNet/Scripts/segment_folder.py \
        --input DIR --output DIR [--model MODEL_DIR] [--device auto|cpu|cuda] \
        [--backend onnx|torch] [--no-n4] [--n4-shrink N] [--overwrite]

Writes ``<case>.seg.nrrd`` per input (Slicer segmentation file: segment names,
colours and terminology included). Exit code 0 when every case succeeded, 2 for bad
arguments or existing outputs (nothing written), 1 when a case failed.
"""
import argparse
import logging
import os
import sys

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
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser.parse_args(argv)


def outputPath(outputDir, inputPath):
    from spineseg.io import strip_image_extension

    return os.path.join(outputDir, strip_image_extension(inputPath) + ".seg.nrrd")


def nodeIds():
    scene = slicer.mrmlScene
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def removeNodesAddedSince(before):
    scene = slicer.mrmlScene
    for nodeId in sorted(nodeIds() - before, reverse=True):
        node = scene.GetNodeByID(nodeId)
        if node is not None:
            scene.RemoveNode(node)


def writeSegmentation(segmentation, target):
    """Write ``target`` atomically (a temporary name, then a rename) with a storage node kept out of the scene."""
    storage = segmentation.CreateDefaultStorageNode()
    temporary = target + ".part.seg.nrrd"
    storage.SetFileName(temporary)
    try:
        if not storage.WriteData(segmentation):
            raise RuntimeError(f"could not write {target}")
        os.replace(temporary, target)  # atomic: never a half-written output
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
    options = segment_command.SegmentOptions(model=args.model or str(model_registry.bundled_model_dir()),
                                             device=args.device, backend=args.backend, n4=args.n4, n4_shrink=args.n4_shrink)
    try:
        options.validate()
    except ValueError as exc:
        return fail(str(exc))
    targets = [outputPath(args.output, p) for p in inputs]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.overwrite:
        return fail(f"{existing[0]} exists ({len(existing)} outputs in all); pass --overwrite to replace them")
    logic = SpineSegUNet.SpineSegUNetLogic()
    if not logic.ensureDependencies(args.backend, interactive=False):
        return fail(f"Python packages for the {args.backend} backend are missing; install them in Slicer first")
    os.makedirs(args.output, exist_ok=True)

    failures = 0
    for index, (inputPath, target) in enumerate(zip(inputs, targets), 1):
        print(f"[{index}/{len(inputs)}] {inputPath}", flush=True)
        before = nodeIds()
        try:
            volume = SpineSegUNet.loadVolumeFile(inputPath)
            segmentation = logic.segment(volume, options, show3D=False)
            writeSegmentation(segmentation, target)
            print(f"  -> {target}", flush=True)
        except Exception as exc:
            failures += 1
            logging.error(f"{inputPath}: {exc}")
            print(f"  failed: {exc}", file=sys.stderr, flush=True)
        finally:
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
