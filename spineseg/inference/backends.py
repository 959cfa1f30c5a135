"""Predictors: the same model run through PyTorch or through ONNX Runtime.

Each backend turns a preprocessed canonical volume (C, D, H, W) into channel
indices (argmax or threshold) and, on request, blended probabilities. The torch
backend stitches with MONAI's ``sliding_window_inference`` on the device (the
blend stays on the GPU); the ONNX backend uses the NumPy stitcher in
:mod:`spineseg.inference.sliding` and never imports torch, so it works where
PyTorch is not installed (most Slicer installs).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from spineseg.errors import Cancelled, InputError
from spineseg.inference import sliding
from spineseg.inference.postprocess import decide
from spineseg.labels import ClassInfo
from spineseg.modelfile import ModelHeader, read_header, sha256_file

ProgressFn = Optional[Callable[[float, str], None]]
CancelFn = Optional[Callable[[], bool]]
BACKENDS = ("torch", "onnx")
#: device names every command takes (and ``cuda:N``, a numbered CUDA device)
DEVICES = ("auto", "cpu", "cuda")
#: ONNX metadata key holding the in-plane multiple the exported graph needs
ONNX_MULTIPLE_KEY = "spineseg.multiple"


@dataclass(frozen=True)
class ModelInfo:
    """A model's :class:`~spineseg.modelfile.ModelHeader` and the folder it describes (what inference reads)."""

    path: Path
    header: ModelHeader

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def task(self) -> str:
        return self.header.task

    @property
    def classes(self) -> Tuple[ClassInfo, ...]:
        return tuple(self.header.classes)

    @property
    def in_channels(self) -> int:
        return int(self.header.architecture.in_channels)

    @property
    def out_channels(self) -> int:
        return int(self.header.architecture.out_channels)

    @property
    def window(self) -> Tuple[int, int, int]:
        return tuple(int(v) for v in self.header.window)  # type: ignore[return-value]

    @property
    def spacing(self) -> Tuple[float, float, float]:
        return tuple(float(v) for v in self.header.spacing)  # type: ignore[return-value]

    @property
    def preprocessing(self) -> dict:
        return dict(self.header.preprocessing)

    @property
    def onnx_file(self) -> Optional[str]:
        return (self.header.onnx or {}).get("file")

    @property
    def onnx_sha256(self) -> Optional[str]:
        return (self.header.onnx or {}).get("sha256")

    @property
    def slice_mm_range(self) -> Optional[Tuple[float, float]]:
        return self.header.slice_mm_range


def model_info(path) -> ModelInfo:
    """Read and check a model's header (torch-free; :func:`spineseg.modelfile.read_header` validates it)."""
    p = Path(path)
    return ModelInfo(p.parent if p.is_file() else p, read_header(p))


def probabilities_np(logits: np.ndarray, task: str) -> np.ndarray:
    """Sigmoid (binary) or softmax over axis 1 (multiclass), float32."""
    logits = logits.astype(np.float32, copy=False)
    if task == "binary":
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- ONNX Runtime
class OnnxBackend:
    """Runs ``model.onnx`` with onnxruntime and the NumPy stitcher; imports no torch."""

    name = "onnx"

    def __init__(self, info: ModelInfo, device: str = "auto") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("the onnx backend needs onnxruntime; install it (pip install onnxruntime) "
                             "or use --backend torch") from None
        if not info.onnx_file:
            raise InputError(f"{info.path}: model has no ONNX file; create it with "
                             f"'spineseg export {info.path} --onnx' or use --backend torch")
        onnx_path = info.path / info.onnx_file
        if not onnx_path.is_file():
            raise InputError(f"{onnx_path}: ONNX file listed in the model header is missing; "
                             f"run 'spineseg export {info.path} --onnx' again")

        if sha256_file(onnx_path) != info.onnx_sha256:  # the header requires it (modelfile.ModelHeader.validate)
            raise InputError(f"{onnx_path}: ONNX file does not match the checksum in model.json (changed or "
                             f"damaged); run 'spineseg export {info.path} --onnx --overwrite' again")
        self.info = info
        available = ort.get_available_providers()
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise InputError(f"device {device!r}: this onnxruntime has no CUDA support; "
                                 "use --device cpu or install onnxruntime-gpu")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers: List = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        elif device == "auto" and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"{onnx_path}: cannot load ONNX model ({str(exc).splitlines()[0][:160]}); "
                             "export it again") from None
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        meta = self.session.get_modelmeta().custom_metadata_map
        self.multiple = int(meta.get(ONNX_MULTIPLE_KEY, "1"))
        self.input_name = self.session.get_inputs()[0].name
        channels = self.session.get_outputs()[0].shape[1]
        if isinstance(channels, int) and channels != info.out_channels:
            raise InputError(f"{onnx_path}: model/class mismatch: the ONNX graph has {channels} output channels, "
                             f"model.json says {info.out_channels}; run 'spineseg export {info.path} --onnx --overwrite'")

    def _logits(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = np.pad(x, [(0, 0)] * 3 + [(0, ph), (0, pw)])
        y = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return y[..., :h, :w]

    def predict_volume(self, volume: np.ndarray, *, window: Sequence[int], overlap: float, batch: int,
                       amp: bool = False, want_probabilities: bool = False, progress: ProgressFn = None,
                       cancel: CancelFn = None, fallback_window: Optional[Sequence[int]] = None,
                       ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(C, D, H, W) -> channel indices (D, H, W) uint8 and optionally probabilities (K, D, H, W)."""
        task = self.info.task
        probs = sliding.sliding_window(
            volume, lambda x: probabilities_np(self._logits(x), task), window=window, overlap=overlap,
            batch_size=batch, progress=progress, cancel=cancel)
        return decide(probs, task), (probs if want_probabilities else None)


# --------------------------------------------------------------------------- PyTorch
class _DeviceOutOfMemory(Exception):
    """A single window does not fit on the device."""


def resolve_torch_device(device: str, local_rank: Optional[int] = None):
    """``auto`` -> cuda when available, else cpu; checks that a requested CUDA device exists.

    ``local_rank``: this process's GPU under torchrun (a CUDA request then means that GPU).
    Training and inference both resolve devices here.
    """
    import torch

    device = str(device or "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: no CUDA GPU is available to PyTorch here; use --device cpu or auto")
        dev = torch.device("cuda", local_rank) if local_rank is not None else torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0")
        return dev
    raise InputError(f"device {device!r}: use auto, cpu, cuda or cuda:N")


def is_device_name(device: str) -> bool:
    """True for the names in :data:`DEVICES` and for ``cuda:N``."""
    return device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())


class SplittingForward:
    """Calls the network on a batch of windows; on GPU out-of-memory, retries in halves and remembers the size.

    A single window that still does not fit raises :class:`_DeviceOutOfMemory` so the
    caller can move to the CPU.
    """

    def __init__(self, network: Callable, on_warning: Callable[[str], None] = lambda m: warnings.warn(m)) -> None:
        self.network = network
        self.max_batch: Optional[int] = None
        self.on_warning = on_warning

    def __call__(self, x):
        import torch

        n = int(x.shape[0])
        step = self.max_batch
        if step is not None and n > step:
            return torch.cat([self(x[i:i + step]) for i in range(0, n, step)])
        try:
            return self.network(x)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if n == 1:
                raise _DeviceOutOfMemory() from None
            self.max_batch = max(1, n // 2)
            self.on_warning(f"out of GPU memory with {n} windows per batch; retrying with {self.max_batch}")
            return self(x)


class TorchBackend:
    """Runs the safetensors weights with PyTorch; MONAI's Gaussian sliding window on the device."""

    name = "torch"
    #: "auto": our NumPy stitcher on the CPU, MONAI's on a GPU; "monai" or "numpy" to force one
    stitcher = "auto"

    def __init__(self, info: ModelInfo, device="auto", *, network=None) -> None:
        """``network``: an in-memory network to run as the saved model would (training's validation,
        as nnU-Net's trainer hands its network to its predictor); None loads the weights in ``info.path``.
        The network is put in eval mode; a caller that trains it restores training mode.
        """
        self.info = info
        self.device = resolve_torch_device(str(device))
        if network is None:
            from spineseg.modelfile import load_model

            network = load_model(info.path, device=str(self.device)).network
        self.network = network.to(self.device).eval()

    def _run(self, volume: np.ndarray, device, *, window, overlap, batch, amp, want_probabilities,
             progress: ProgressFn, cancel: CancelFn):
        import torch
        from monai.inferers import sliding_window_inference

        network = self.network.to(device)
        task = self.info.task
        x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None].to(device)
        padded = tuple(max(int(s), int(w)) for s, w in zip(volume.shape[1:], window))
        total = len(sliding.window_grid(padded, window, overlap))
        done = [0]
        forward = SplittingForward(network)
        use_amp = bool(amp) and device.type == "cuda"

        def predictor(windows):
            if cancel is not None and cancel():
                raise Cancelled("inference cancelled")
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = forward(windows)
            logits = logits.float()
            out = torch.sigmoid(logits) if task == "binary" else torch.softmax(logits, dim=1)
            done[0] += int(windows.shape[0])
            if progress is not None:
                progress(min(1.0, done[0] / total), "inference")
            return out

        if self.stitcher == "numpy" or (self.stitcher == "auto" and device.type == "cpu"):
            # On the CPU our NumPy stitcher blends the same windows with the same Gaussian 2.5x faster than
            # MONAI's (benchmarks/inference.py, "stitching only" rows); on a GPU MONAI keeps the blend on the device.
            def predict_np(windows: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    logits = forward(torch.from_numpy(windows)).float()
                    out = torch.sigmoid(logits) if task == "binary" else torch.softmax(logits, dim=1)
                return out.numpy()

            probs_cpu = sliding.sliding_window(volume, predict_np, window=window, overlap=overlap,
                                               batch_size=max(1, int(batch)), progress=progress, cancel=cancel)
            return decide(probs_cpu, task), (probs_cpu if want_probabilities else None)

        with torch.inference_mode():
            probs = sliding_window_inference(
                x, roi_size=tuple(int(w) for w in window), sw_batch_size=max(1, int(batch)), predictor=predictor,
                overlap=float(overlap), mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0.0)[0]
            if task == "binary":
                indices = (probs[0] >= 0.5).to(torch.uint8)
            else:
                indices = torch.argmax(probs, dim=0).to(torch.uint8)
            indices_np = indices.cpu().numpy()
            probs_np = probs.cpu().numpy() if want_probabilities else None
        return indices_np, probs_np

    def predict_volume(self, volume: np.ndarray, *, window: Sequence[int], overlap: float, batch: int,
                       amp: bool = True, want_probabilities: bool = False, progress: ProgressFn = None,
                       cancel: CancelFn = None, fallback_window: Optional[Sequence[int]] = None,
                       ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``fallback_window``: the training window to retry with when a large tile does not fit."""
        import torch

        kwargs = dict(overlap=overlap, batch=batch, amp=amp, want_probabilities=want_probabilities,
                      progress=progress, cancel=cancel)
        try:
            return self._run(volume, self.device, window=window, **kwargs)
        except _DeviceOutOfMemory:
            if self.device.type == "cpu":
                raise
        if fallback_window is not None and tuple(fallback_window) != tuple(window):
            torch.cuda.empty_cache()
            warnings.warn("a whole tile does not fit in GPU memory; using sliding windows instead")
            try:
                return self._run(volume, self.device, window=fallback_window, **kwargs)
            except _DeviceOutOfMemory:
                pass
            window = fallback_window
        torch.cuda.empty_cache()
        warnings.warn("out of GPU memory even with one window per batch; continuing on the CPU (slower)")
        return self._run(volume, torch.device("cpu"), window=window, **kwargs)


def open_backend(model_path, backend: str = "torch", device: str = "auto"):
    """Load a model for inference with ``backend`` ('torch' or 'onnx')."""
    info = model_info(model_path)
    if backend == "onnx":
        return OnnxBackend(info, device)
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise InputError("the torch backend needs PyTorch; install it or use --backend onnx") from None
        return TorchBackend(info, device)
    raise InputError(f"backend {backend!r}: use torch or onnx")
