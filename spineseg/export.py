"""Export a SpineSeg model to ONNX for the ONNX Runtime backend (no PyTorch needed to run it).

The graph is the network's ``forward_padded`` with dynamic batch, depth, height
and width; the in-plane multiple it needs is stored in the ONNX metadata
(``spineseg.multiple``) and the ONNX backend pads to it. The export is checked
against PyTorch on a random window before it is written.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from spineseg.errors import InputError, SpineSegError
from spineseg.inference.backends import ONNX_MULTIPLE_KEY
from spineseg.io import refuse_input_as_output, write_bytes_atomic
from spineseg.modelfile import HEADER_FILE, WEIGHTS_FILE, load_model, read_header

DEFAULT_OPSET = 17
#: the opsets export offers: from the default to the newest of PyTorch's TorchScript exporter (used here)
OPSETS = range(DEFAULT_OPSET, 21)
ONNX_NAME = "model.onnx"
#: largest |torch - onnxruntime| logit difference accepted by the export check
TOLERANCE = 1e-3


def export_onnx(model_dir, out: Optional[str] = None, *, overwrite: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model.onnx`` (or ``out``) for the model in ``model_dir``; returns the file written.

    When the file lands in the model folder, ``model.json`` gets
    ``"onnx": {"file", "sha256"}`` so the ONNX backend finds and verifies it.
    """
    import hashlib

    import torch

    model_dir = Path(model_dir)
    target = Path(out) if out else model_dir / ONNX_NAME
    if int(opset) not in OPSETS:
        raise InputError(f"--opset {opset}: export writes opset {OPSETS[0]} to {OPSETS[-1]}; use {DEFAULT_OPSET}, "
                         "the default, unless your ONNX Runtime needs another")
    if target.suffix.lower() != ".onnx":
        raise InputError(f"{target}: ONNX output must end in .onnx")
    if target.exists() and not overwrite:
        raise InputError(f"{target}: output exists; pass --overwrite to replace it or choose another name")
    in_model_dir = target.parent.resolve() == model_dir.resolve()
    header_path = model_dir / HEADER_FILE
    weights = model_dir / str((read_header(model_dir).weights or {}).get("file") or WEIGHTS_FILE)
    refuse_input_as_output([target], [header_path, weights])  # e.g. a link named .onnx to the weights
    loaded = load_model(model_dir, device="cpu")
    network = loaded.network.eval()
    multiple = int(getattr(network, "multiple", 1))
    padded = _PaddedGraph(network).eval()
    in_channels = int(loaded.header.architecture.in_channels)
    window = [int(v) for v in loaded.header.window]
    size = [max(1, window[0]), _round_up(window[1], multiple), _round_up(window[2], multiple)]
    example = torch.randn(2, in_channels, *size)
    dynamic = {0: "batch", 2: "depth", 3: "height", 4: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(padded, (example,), buffer, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": dynamic, "logits": dynamic}, opset_version=int(opset),
                          dynamo=False)
    data = _with_metadata(buffer.getvalue(), {ONNX_MULTIPLE_KEY: str(multiple),
                                              "spineseg.model": str(loaded.header.name)})
    _check_against_torch(data, network, in_channels, multiple)
    written = write_bytes_atomic(data, target, overwrite=overwrite)
    if in_model_dir:
        header = read_header(model_dir)
        header.onnx = {"file": target.name, "sha256": hashlib.sha256(data).hexdigest()}
        write_bytes_atomic(header.to_json().encode("utf-8"), header_path, overwrite=True)
    return written


def _round_up(n: int, multiple: int) -> int:
    return int(-(-int(n) // multiple) * multiple)


def _PaddedGraph(network):
    import torch

    class PaddedGraph(torch.nn.Module):
        """The network without its pad/crop wrapper: shapes stay symbolic in the trace."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            inner = getattr(self.net, "forward_padded", None)
            return inner(x) if inner is not None else self.net(x)

    return PaddedGraph(network)


def _with_metadata(data: bytes, meta: dict) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _check_against_torch(data: bytes, network, in_channels: int, multiple: int) -> None:
    """Run a differently shaped input through both; a mismatch is a bug, not bad input."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, in_channels, 3, 2 * multiple, multiple)).astype(np.float32)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = network(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - ref).max())
    if got.shape != ref.shape or err > TOLERANCE:
        raise SpineSegError(f"ONNX export does not reproduce the network (max difference {err:.3g}); not written")
