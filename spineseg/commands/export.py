"""``spineseg export``: write the ONNX file of a model for the ONNX Runtime backend."""
from __future__ import annotations

import argparse

from spineseg.errors import InputError
from spineseg.export import DEFAULT_OPSET, OPSETS, export_onnx

NAME = "export"
HELP = "Export a model to ONNX (model.onnx in the model folder) for '--backend onnx' without PyTorch."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder (model.json + model.safetensors)")
    parser.add_argument("--onnx", nargs="?", const="", default="", metavar="OUT",
                        help="ONNX file to write (default: MODEL/model.onnx, recorded in model.json)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {OPSETS[0]} to {OPSETS[-1]} (default {DEFAULT_OPSET})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ONNX file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    model = Path(args.model)
    if not (model / "model.json").is_file():
        raise InputError(f"{model}: not a SpineSeg model folder (no model.json); give the folder 'spineseg train' wrote")

    written = export_onnx(model, args.onnx or None, overwrite=args.overwrite, opset=args.opset)
    print(written)
    return 0
