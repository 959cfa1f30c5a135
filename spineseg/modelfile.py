"""Model files: a directory with ``model.json`` (header) and ``model.safetensors`` (weights).

Safetensors holds only tensors, so loading a model never runs code from the file;
``.pth`` import (for old checkpoints) goes through ``torch.load(weights_only=True)``.
The header says what the weights are (architecture, classes, spacing, window,
preprocessing, training summary) and carries their sha256, so a truncated or
modified file is refused before use. This module imports torch only inside the
functions that need it: :func:`read_header` works without torch (ONNX backend).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from spineseg import __version__
from spineseg.errors import InputError
from spineseg.io import json_text, write_files_atomic
from spineseg.labels import SPINE, SPINE_CLASSES, ClassInfo
from spineseg.networks import build_network, network_names

PathLike = Union[str, Path]

FORMAT = "spineseg-model"
FORMAT_VERSION = 1
HEADER_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
TASKS = ("multiclass", "binary")
WEIGHT_DTYPES = ("float32", "float16")
DEFAULT_MODEL_NAME = "spineseg-default"
#: largest window a header may declare (slices, in-plane voxels); checked before anything is built
MAX_WINDOW = (256, 2048, 2048)
#: largest hyper-parameter values (channel counts, kernel sizes, ...) and base width (channels double per stage)
#: a header may ask for: larger ones are a damaged or hostile header, and would exhaust memory while building
MAX_HPARAM = 1024
MAX_WIDTH = 256


@dataclass
class ArchitectureSpec:
    name: str
    in_channels: int
    out_channels: int
    hparams: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "hparams": copy.deepcopy(self.hparams)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ArchitectureSpec":
        return cls(str(d["name"]), int(d["in_channels"]), int(d["out_channels"]), dict(d.get("hparams") or {}))


@dataclass
class ModelHeader:
    """The JSON header of a model (``model.json``); :meth:`validate` checks its consistency."""

    name: str
    architecture: ArchitectureSpec
    task: str
    classes: List[ClassInfo]
    modality: str = "MR-T2"
    spacing: Tuple[float, float, float] = (4.4, 0.345, 0.345)  # mm along canonical D, H, W
    window: Tuple[int, int, int] = (12, 128, 128)  # D, H, W
    preprocessing: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    weights: Dict[str, Any] = field(default_factory=dict)
    onnx: Optional[Dict[str, Any]] = None
    spineseg_version: str = __version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def create(cls, name: str, architecture: str, *, task: str = "multiclass",
               classes: Optional[List[ClassInfo]] = None, in_channels: int = 1,
               hparams: Optional[Dict[str, Any]] = None, **fields: Any) -> "ModelHeader":
        """A header for a new model; out_channels follows from the task and classes."""
        if classes is None:
            classes = [SPINE] if task == "binary" else list(SPINE_CLASSES)
        out = 1 if task == "binary" else 1 + len(classes)
        header = cls(name=name, architecture=ArchitectureSpec(architecture, in_channels, out, dict(hparams or {})),
                     task=task, classes=list(classes), **fields)
        header.validate()
        return header

    @property
    def out_channels(self) -> int:
        return self.architecture.out_channels

    @property
    def slice_mm_range(self) -> Optional[Tuple[float, float]]:
        """The slice spacings (mm) a model trained on thin and thick slices saw, or None."""
        try:
            lo, hi = (float(v) for v in self.training.get("slice_mm_range"))  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return None
        return (lo, hi) if 0 < lo <= hi else None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "format": self.format, "format_version": self.format_version, "name": self.name,
            "spineseg_version": self.spineseg_version, "architecture": self.architecture.to_dict(),
            "task": self.task, "classes": [c.to_dict() for c in self.classes], "modality": self.modality,
            "spacing": [float(s) for s in self.spacing], "window": [int(w) for w in self.window],
            "preprocessing": copy.deepcopy(self.preprocessing), "training": copy.deepcopy(self.training),
            "metrics": copy.deepcopy(self.metrics), "weights": copy.deepcopy(self.weights),
        }
        if self.onnx is not None:
            d["onnx"] = copy.deepcopy(self.onnx)
        return d

    def to_json(self) -> str:
        return json_text(self.to_dict()) + "\n"

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "model header") -> "ModelHeader":
        """Parse and validate; any problem is an InputError naming ``source``."""
        if not isinstance(d, dict):
            raise InputError(f"{source}: not a SpineSeg model header (expected a JSON object)")
        if d.get("format") != FORMAT:
            raise InputError(f"{source}: not a SpineSeg model header (format is {d.get('format')!r}, "
                             f"expected {FORMAT!r}); give a model folder written by SpineSeg")
        version = d.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise InputError(f"{source}: bad format_version {version!r}; the header is damaged")
        if version > FORMAT_VERSION:
            raise InputError(f"{source}: model format version {version} is newer than this SpineSeg supports "
                             f"({FORMAT_VERSION}); upgrade SpineSeg")
        try:
            header = cls(
                name=str(d["name"]), architecture=ArchitectureSpec.from_dict(d["architecture"]), task=str(d["task"]),
                classes=[ClassInfo.from_dict(c) for c in d["classes"]], modality=str(d.get("modality", "MR-T2")),
                spacing=tuple(float(s) for s in d["spacing"]), window=tuple(int(w) for w in d["window"]),  # type: ignore[arg-type]
                preprocessing=dict(d.get("preprocessing") or {}), training=dict(d.get("training") or {}),
                metrics=dict(d.get("metrics") or {}), weights=dict(d.get("weights") or {}),
                onnx=dict(d["onnx"]) if d.get("onnx") else None,
                spineseg_version=str(d.get("spineseg_version", "")), format=FORMAT, format_version=version,
            )
        except KeyError as exc:
            raise InputError(f"{source}: header lacks the field {exc.args[0]!r}; the model file is incomplete") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{source}: header has a malformed field ({exc}); the model file is damaged") from None
        header.validate(source)
        return header

    def validate(self, source: str = "model header") -> None:
        """Raise InputError when fields disagree (class count vs out_channels, bad window or spacing)."""
        if self.task not in TASKS:
            raise InputError(f"{source}: unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if not self.classes:
            raise InputError(f"{source}: header lists no classes")
        values = [c.value for c in self.classes]
        if len(set(values)) != len(values) or min(values) < 1:
            raise InputError(f"{source}: class label values must be distinct and >= 1, got {values}")
        expected = 1 if self.task == "binary" else 1 + len(self.classes)
        if self.task == "binary" and len(self.classes) != 1:
            raise InputError(f"{source}: a binary model has exactly one class, header lists {len(self.classes)}")
        if self.architecture.out_channels != expected:
            raise InputError(
                f"{source}: class count mismatch: {self.task} with {len(self.classes)} classes needs "
                f"{expected} output channels, architecture declares {self.architecture.out_channels}"
            )
        if self.architecture.in_channels < 1:
            raise InputError(f"{source}: in_channels must be >= 1")
        if len(self.window) != 3 or min(self.window) < 1:
            raise InputError(f"{source}: window must be three positive sizes (D, H, W), got {list(self.window)}")
        if any(w > m for w, m in zip(self.window, MAX_WINDOW)):
            raise InputError(f"{source}: window {list(self.window)} is larger than SpineSeg runs "
                             f"({' x '.join(map(str, MAX_WINDOW))} at most); the header is damaged")
        check_hparams(self.architecture.hparams, source, "the header is damaged")
        if self.onnx is not None:
            name = str(self.onnx.get("file") or "")
            if not name or Path(name).name != name or name in (".", ".."):
                raise InputError(f"{source}: onnx.file {name!r} is not a file name inside the model folder; "
                                 "refusing it: run 'spineseg export MODEL --onnx --overwrite' again")
            if not re.fullmatch(r"[0-9a-f]{64}", str(self.onnx.get("sha256") or "")):
                raise InputError(f"{source}: onnx.sha256 is missing or malformed; the ONNX file cannot be verified: "
                                 "run 'spineseg export MODEL --onnx --overwrite' again")
        if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
            raise InputError(f"{source}: spacing must be three positive mm values (D, H, W), got {list(self.spacing)}")
        dtype = self.weights.get("dtype", "float32")
        if dtype not in WEIGHT_DTYPES:
            raise InputError(f"{source}: unsupported weight dtype {dtype!r}; expected one of {', '.join(WEIGHT_DTYPES)}")


@dataclass
class LoadedModel:
    network: Any  # torch.nn.Module in eval mode
    header: ModelHeader
    path: Path


def _model_dir(path: PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (HEADER_FILE, WEIGHTS_FILE):
        p = p.parent
    if not p.exists():
        raise InputError(f"{p}: model not found; give a model folder holding {HEADER_FILE} and {WEIGHTS_FILE}")
    if not p.is_dir():
        raise InputError(f"{p}: not a model folder; give the folder holding {HEADER_FILE} and {WEIGHTS_FILE}")
    return p


def read_header(path: PathLike) -> ModelHeader:
    """The validated header of the model at ``path`` (folder or its model.json); never imports torch."""
    folder = _model_dir(path)
    hfile = folder / HEADER_FILE
    if not hfile.is_file():
        raise InputError(f"{folder}: no {HEADER_FILE} in this folder; give a SpineSeg model folder")
    try:
        d = json.loads(hfile.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{hfile}: header is not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]}); "
                         "the file is damaged or truncated: re-download or re-export the model") from None
    return ModelHeader.from_dict(d, source=str(hfile))


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_safetensors_layout(data: bytes, wfile: Path) -> None:
    """Refuse files that are not complete safetensors (truncated, pickles) before any parsing by torch."""
    looks_pickled = data[:1] == b"\x80" or data[:2] == b"PK"  # pickle protocol >= 2, or a torch zip
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else -1
    if looks_pickled and not 0 <= n < len(data):
        raise InputError(f"{wfile}: is a pickle/.pth checkpoint, not safetensors; SpineSeg never unpickles model "
                         "files: convert it with spineseg.modelfile.import_pth (weights only) and save_model")
    if n < 0:
        raise InputError(f"{wfile}: truncated weights file ({len(data)} bytes); re-download or re-export the model")
    if n > 100_000_000:  # no real tensor table is this large: some other kind of file
        raise InputError(f"{wfile}: not a safetensors file; give a model folder written by SpineSeg")
    if 8 + n > len(data):
        raise InputError(f"{wfile}: truncated weights file (header needs {8 + n} bytes, file has {len(data)}); "
                         "re-download or re-export the model")
    try:
        meta = json.loads(data[8:8 + n].decode("utf-8"))
        end = max([int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"] or [0])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
        raise InputError(f"{wfile}: not a safetensors file (unreadable tensor table); re-export the model") from None
    if 8 + n + end > len(data):
        raise InputError(f"{wfile}: truncated weights file ({len(data)} of {8 + n + end} bytes); "
                         "re-download or re-export the model")


def _state_dict_bytes(network: Any, dtype: str) -> Tuple[bytes, Dict[str, Any]]:
    import torch
    from safetensors.torch import save

    tensors = {}
    for k, v in network.state_dict().items():
        t = v.detach().to("cpu")
        if dtype == "float16" and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[k] = t.contiguous().clone()
    return save(tensors, metadata={"format": FORMAT}), tensors


def _unwrap(network: Any) -> Any:
    """The plain module inside torch.compile / DDP / DataParallel wrappers (their state-dict keys are prefixed)."""
    while True:
        if hasattr(network, "_orig_mod"):
            network = network._orig_mod
        elif type(network).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(network, "module"):
            network = network.module
        else:
            return network


def save_model(path: PathLike, network: Any, header: ModelHeader, *, overwrite: bool = False,
               dtype: str = "float32") -> Path:
    """Write ``network``'s weights and ``header`` to the model folder ``path``.

    The header's architecture must match ``network.spec`` (set by build_network)
    when present. Weights are written first, then the header with their sha256;
    both atomically. An existing model is replaced only with ``overwrite``.
    Returns the folder. ``dtype="float16"`` halves the file (for shipped models).
    torch.compile and DDP wrappers are unwrapped first.
    """
    if dtype not in WEIGHT_DTYPES:
        raise InputError(f"unsupported weight dtype {dtype!r}; use one of {', '.join(WEIGHT_DTYPES)}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; a model is a folder, choose another name")
    if (folder / HEADER_FILE).exists() and not overwrite:
        raise InputError(f"{folder}: a model exists here; pass --overwrite to replace it or choose another folder")
    header = copy.deepcopy(header)
    network = _unwrap(network)
    spec = getattr(network, "spec", None)
    if spec is not None:
        a = header.architecture
        mine = {"name": a.name, "in_channels": a.in_channels, "out_channels": a.out_channels}
        theirs = {k: spec[k] for k in mine}
        if mine != theirs:
            raise InputError(f"header architecture {mine} does not match the network {theirs}")
        header.architecture.hparams = copy.deepcopy(spec["hparams"])
    header.validate()
    data, _ = _state_dict_bytes(network, dtype)
    header.weights = {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest(), "dtype": dtype}
    header.spineseg_version = __version__
    header.onnx = None  # an ONNX export belongs to the old weights; infer's export adds it again
    stale = folder / ONNX_FILE
    folder.mkdir(parents=True, exist_ok=True)
    write_files_atomic({folder / WEIGHTS_FILE: data, folder / HEADER_FILE: header.to_json().encode("utf-8")},
                       overwrite=True)  # a full disk never leaves new weights beside the old header
    if stale.is_file():
        stale.unlink()
    return folder


def check_hparams(hparams: Dict[str, Any], source: str, fix: str) -> None:
    """Refuse hyper-parameters no network can be built with (before anything is built): numbers beyond
    :data:`MAX_HPARAM` (:data:`MAX_WIDTH` for the width) and counts below 1 (channels, kernels, depths)."""
    for key, value in sorted(hparams.items()):
        values = value if isinstance(value, (list, tuple)) else [value]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        bound = MAX_WIDTH if key == "width" else MAX_HPARAM
        if any(not abs(v) <= bound for v in numbers):
            raise InputError(f"{source}: hyper-parameter {key} = {value!r} is beyond {bound}; {fix}")
        if any(isinstance(v, int) and v < 1 for v in numbers):
            raise InputError(f"{source}: hyper-parameter {key} = {value!r} is below 1 (a count of channels, "
                             f"kernel size or depth); {fix}")


def _check_shapes(expected: Dict[str, Any], got: Dict[str, Any], header: ModelHeader, wfile: Path) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = [k for k in expected if k in got and tuple(expected[k].shape) != tuple(got[k].shape)]
    out = header.out_channels
    for k in wrong:
        e, g = tuple(expected[k].shape), tuple(got[k].shape)
        if len(e) == len(g) and e[0] == out and g[0] != out and e[1:] == g[1:]:
            raise InputError(
                f"{wfile}: class count mismatch: the weights have {g[0]} output channels, the header declares "
                f"{out} ({header.task}, {len(header.classes)} classes); the header does not belong to these weights"
            )
    if missing or extra or wrong:
        what = []
        if wrong:
            k = wrong[0]
            what.append(f"{len(wrong)} tensors differ in shape (first: {k} {tuple(got[k].shape)} vs "
                        f"{tuple(expected[k].shape)})")
        if missing:
            what.append(f"{len(missing)} missing (first: {missing[0]})")
        if extra:
            what.append(f"{len(extra)} unexpected (first: {extra[0]})")
        raise InputError(f"{wfile}: weights do not match the header's architecture "
                         f"{header.architecture.name!r}: {'; '.join(what)}; the header does not belong to these weights")


def load_model(path: PathLike, device: str = "cpu") -> LoadedModel:
    """Load a model folder: header checks, sha256 of the weights, shape checks; eval mode on ``device``."""
    import torch
    from safetensors.torch import load

    folder = _model_dir(path)
    header = read_header(folder)
    arch = header.architecture
    if arch.name not in network_names():
        raise InputError(f"{folder / HEADER_FILE}: unknown architecture {arch.name!r} (known: "
                         f"{', '.join(network_names())}); upgrade SpineSeg or use another model")
    wname = str(header.weights.get("file") or WEIGHTS_FILE)
    if Path(wname).name != wname:
        raise InputError(f"{folder / HEADER_FILE}: names weights file {wname!r} outside the model folder; refusing it")
    wfile = folder / wname
    if not wfile.is_file():
        raise InputError(f"{wfile}: weights file missing; the model folder is incomplete: re-download or re-export it")
    data = wfile.read_bytes()
    _check_safetensors_layout(data, wfile)
    expected_hash = str(header.weights.get("sha256", ""))
    actual = hashlib.sha256(data).hexdigest()
    if expected_hash != actual:
        raise InputError(f"{wfile}: wrong sha256 ({actual[:12]}..., header says {expected_hash[:12] or 'nothing'}...); "
                         "the weights were modified or damaged: re-download or re-export the model")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{wfile}: unreadable safetensors file ({str(exc)[:120]}); re-export the model") from None
    try:
        network = build_network(arch.name, in_channels=arch.in_channels, out_channels=arch.out_channels,
                                **arch.hparams)
    except (TypeError, ValueError, InputError) as exc:
        raise InputError(f"{folder / HEADER_FILE}: its hyper-parameters do not build {arch.name!r} ({exc}); "
                         "the model was made by another SpineSeg version or the header was edited") from None
    expected = network.state_dict()
    _check_shapes(expected, tensors, header, wfile)
    state = {k: (v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v) for k, v in tensors.items()}
    network.load_state_dict(state, strict=True)
    network.eval()
    network.to(torch.device(device))
    return LoadedModel(network=network, header=header, path=folder)


def import_pth(path: PathLike) -> Dict[str, Any]:
    """Tensors of an old ``.pth`` checkpoint, loaded with ``torch.load(weights_only=True)``.

    Accepts a plain state dict or one under ``state_dict``/``model``. A file
    carrying code or arbitrary objects is refused (nothing is executed).
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found; give a .pth checkpoint")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{p}: refused: not a weights-only checkpoint (it holds code or objects other than "
                         f"tensors, or is damaged: {first}); export a plain state_dict") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{p}: checkpoint is not a state dict of tensors; export model.state_dict()")
    return {str(k): v for k, v in obj.items()}


def default_model_path() -> Optional[Path]:
    """The bundled default model folder, or None when none is installed.

    Looks in the repository/extension (``Resources/Models/spineseg-default``)
    and then in package data (``spineseg/models/spineseg-default``).
    """
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "Resources" / "Models" / DEFAULT_MODEL_NAME, here / "models" / DEFAULT_MODEL_NAME]
    for c in candidates:
        if (c / HEADER_FILE).is_file():
            return c
    return None
