"""The inference engine the CLI and the Slicer module share.

``segment_image``: canonicalise and preprocess (as the model header says), run
the backend's sliding window (or whole in-plane tiles), decide classes, clean
up, and map back to the input's exact voxel grid. Torch is imported only by the
torch backend, so the ONNX path runs without PyTorch.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from spineseg.errors import Cancelled, InputError
from spineseg.geometry import CanonicalFrame, inplane_target_shape, near_isotropic_warning, resample_inplane
from spineseg.inference import postprocess, tta
from spineseg.inference.backends import BACKENDS, open_backend
from spineseg.inference.sliding import DEFAULT_OVERLAP
from spineseg.labels import SPINE, ClassInfo
from spineseg.modelfile import MAX_WINDOW
from spineseg.preprocessing import PreprocessingConfig

ProgressFn = Optional[Callable[[float, str], None]]
CancelFn = Optional[Callable[[], bool]]

# share of the progress bar per stage (N4 dominates on CPU when it is on)
_PREP_SHARE_N4, _PREP_SHARE_PLAIN, _POST_SHARE = 0.35, 0.05, 0.05


@dataclass
class InferenceOptions:
    """How to run a model; ``None`` means "what the model header says" or the device's best choice."""

    device: str = "auto"
    backend: str = "torch"
    n4: Optional[bool] = None
    n4_shrink: Optional[int] = None
    window: Optional[Tuple[int, int, int]] = None
    overlap: float = DEFAULT_OVERLAP
    tile: bool = False
    batch: int = 4
    amp: Optional[bool] = None  # None: bf16 autocast on GPU, off on CPU
    binary: bool = False
    probabilities: bool = False
    keep_largest: bool = False
    tta: bool = False
    tta_flips: Optional[Tuple[Tuple[int, ...], ...]] = None  # None: tta.DEFAULT_FLIPS

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"backend {self.backend!r}: use torch or onnx")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise InputError(f"overlap {self.overlap}: use a fraction in [0, 1), e.g. 0.5")
        if int(self.batch) < 1:
            raise InputError(f"batch {self.batch}: use an integer >= 1")
        if self.window is not None and (len(self.window) != 3 or min(int(v) for v in self.window) < 1):
            raise InputError(f"window {self.window}: give three positive sizes D H W, e.g. 12 128 128")
        if self.window is not None and any(int(w) > m for w, m in zip(self.window, MAX_WINDOW)):
            raise InputError(f"window {list(self.window)}: larger than {' x '.join(map(str, MAX_WINDOW))} "
                             "(slices x in-plane voxels); use --tile for whole slabs, or a smaller window")
        if self.n4_shrink is not None and int(self.n4_shrink) < 1:
            raise InputError(f"N4 shrink factor {self.n4_shrink}: use an integer >= 1")
        if self.tta_flips is not None:
            tta.check_flips(self.tta_flips)


@dataclass
class SegmentationResult:
    """``label``: uint8 label map on the input's grid; ``probabilities``: vector image (one channel per
    network output) when asked for; ``classes``: the values, names and colours present in ``label``'s scheme.
    With flip TTA: ``disagreement``, a float32 map on the input's grid (the fraction of flips whose label
    differs from the averaged one), and ``uncertainty``, the share of segmented voxels where they differ."""

    label: sitk.Image
    classes: List[ClassInfo]
    probabilities: Optional[sitk.Image] = None
    disagreement: Optional[sitk.Image] = None
    uncertainty: Optional[float] = None
    seconds: float = 0.0
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    warnings: List[str] = dataclasses.field(default_factory=list)
    frame: Optional[CanonicalFrame] = None  # the input's canonical frame, computed once per image


def load(model: Union[str, Path], options: InferenceOptions):
    """Open a model directory with the backend and device of ``options`` (reuse it for many images)."""
    options.check()
    return open_backend(model, options.backend, options.device)


def check_intensities(image: sitk.Image) -> Optional[str]:
    """A warning text when the image does not look like an MR magnitude image (CT, a label map, ...)."""
    array = sitk.GetArrayViewFromImage(image)
    lo = float(array.min())
    if lo < -100.0:
        return (f"intensities go down to {lo:.4g}, which MR magnitude images never do (CT in HU?); "
                "the model was trained on T2 MR and the result may be meaningless")
    sample = array.ravel()[:: max(1, array.size // 200000)]
    if np.unique(sample).size <= 8:
        return ("the image has only a handful of distinct values (a label map or mask?); "
                "the model expects a T2 MR image")
    return None


def _check_spacing(frame: CanonicalFrame, model_spacing: Tuple[float, float, float],
                   slice_mm_range: Optional[Tuple[float, float]] = None) -> Optional[str]:
    """Warn when the slice thickness is far from the model's (in-plane spacing is resampled, slices are not).

    A model trained on thin and thick slices (``slice_mm_range``) accepts anything within a
    factor 2 of that range.
    """
    ours = frame.canonical_spacing[0]
    lo, hi = slice_mm_range or (model_spacing[0], model_spacing[0])
    if ours > 2.0 * hi or ours < 0.5 * lo:
        seen = f"{lo:.3g} to {hi:.3g} mm" if hi > lo else f"{hi:.3g} mm"
        return f"slice spacing {ours:.3g} mm is far from the model's {seen}; results may be poor"
    return None


def _preprocessing(info, options: InferenceOptions):
    """The model header's preprocessing with the N4 overrides of ``options``."""
    config = PreprocessingConfig.from_dict(info.preprocessing)
    if options.n4 is not None:
        config.n4 = bool(options.n4)
    if options.n4_shrink is not None:
        config.n4_shrink = int(options.n4_shrink)
    return config


@dataclass
class PreparedImage:
    """A volume as the network takes it: the input's canonical frame, the preprocessed canonical
    array at the model's in-plane spacing, and the (D, H, W) shape it was resampled to (None: not)."""

    frame: CanonicalFrame
    array: np.ndarray
    resampled: Optional[Tuple[int, int, int]]
    warnings: List[str] = dataclasses.field(default_factory=list)


def prepare_image(image: sitk.Image, info, options: InferenceOptions, *, progress: ProgressFn = None,
                  cancel: CancelFn = None) -> PreparedImage:
    """Check, canonicalise and preprocess ``image`` as the model header (``info``) says.

    Validation keeps the result of this step per case, so the per-epoch cost is the network only.
    """
    notes: List[str] = []

    def warn(text: Optional[str]) -> None:
        if text:
            notes.append(text)
            warnings.warn(text, stacklevel=4)

    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise InputError("image must be a 3D single-channel volume")
    warn(check_intensities(image))
    frame = CanonicalFrame.of(image, warn=False)
    warn(near_isotropic_warning(image, frame.axes[0]))
    warn(_check_spacing(frame, info.spacing, info.slice_mm_range))

    config = _preprocessing(info, options)
    report = progress or (lambda f, m: None)
    report(0.0, "N4 bias correction" if config.n4 else "preprocessing")
    array = config.apply(image, frame=frame, progress=lambda f, m="": report(float(f), m or "N4 bias correction"),
                         cancel=cancel)
    if cancel is not None and cancel():
        raise Cancelled("inference cancelled")
    resampled = inplane_target_shape(frame.shape, frame.canonical_spacing, tuple(info.spacing))
    if resampled is not None:
        array = resample_inplane(array, resampled)
    return PreparedImage(frame, array, resampled, notes)


@dataclass
class Prediction:
    """On the input's canonical grid: channel ``indices`` (D, H, W), ``probabilities`` (K, D, H, W) when
    asked for; with flip TTA the ``disagreement`` map (D, H, W) and the case ``uncertainty``
    (:class:`spineseg.inference.tta.FlipAverage`)."""

    indices: np.ndarray
    probabilities: Optional[np.ndarray] = None
    disagreement: Optional[np.ndarray] = None
    uncertainty: Optional[float] = None


def predict_prepared(prepared: PreparedImage, backend, options: InferenceOptions, *, progress: ProgressFn = None,
                     cancel: CancelFn = None) -> Prediction:
    """The network's answer for a prepared volume, flip-averaged when ``options.tta``."""
    info = backend.info
    window = tuple(int(v) for v in (options.window or info.window))
    train_window = window
    array = prepared.array
    if options.tile:
        # whole in-plane slabs: the networks' norms do not depend on the window size
        window = (window[0], array.shape[1], array.shape[2])
    amp = options.amp if options.amp is not None else True
    run = dict(window=window, overlap=float(options.overlap), batch=int(options.batch), amp=amp,
               cancel=cancel, fallback_window=train_window)
    flipped = None
    if options.tta:
        flipped = tta.average_flips(
            lambda x, prog: backend.predict_volume(x, want_probabilities=True, progress=prog, **run)[1],
            array[None], tta.check_flips(options.tta_flips or tta.DEFAULT_FLIPS), info.task, progress)
        probs = flipped.probabilities
        indices = postprocess.decide(probs, info.task)
    else:
        indices, probs = backend.predict_volume(
            array[None], want_probabilities=options.probabilities or prepared.resampled is not None,
            progress=progress, **run)
    disagreement = None if flipped is None else flipped.disagreement
    if prepared.resampled is not None:
        # back to the input grid as probabilities, then decide (nnU-Net does the same)
        probs = resample_inplane(probs, prepared.frame.shape)
        indices = postprocess.decide(probs, info.task)
        if disagreement is not None:
            disagreement = resample_inplane(disagreement, prepared.frame.shape)
    return Prediction(indices, probs if options.probabilities else None, disagreement,
                      None if flipped is None else flipped.uncertainty)


def label_values(indices: np.ndarray, info, options: InferenceOptions) -> Tuple[np.ndarray, List[ClassInfo]]:
    """Channel indices -> the label values of the model's classes (or the union), cleaned up as asked."""
    classes = list(info.classes)
    if info.task == "binary":
        values = [classes[0].value] if classes else [1]  # indices are 0/1 already
    else:
        values = [c.value for c in classes]
    label = postprocess.indices_to_values(indices, values)
    if options.binary and info.task != "binary":
        label = postprocess.union(label)
        classes = [SPINE]
    if options.keep_largest:
        label = postprocess.keep_largest(label, [c.value for c in classes])
    return label, classes


def segment_image(image: sitk.Image, model, *, options: Optional[InferenceOptions] = None,
                  progress: ProgressFn = None, cancel: CancelFn = None) -> SegmentationResult:
    """Segment one volume. ``model``: a model directory or a backend from :func:`load`.

    The label map has the input's size, spacing, origin and direction. Raises
    :class:`Cancelled` (checked between batches and preprocessing steps) and
    :class:`InputError` for unusable input; writes nothing.
    """
    options = options or InferenceOptions()
    options.check()
    backend = load(model, options) if isinstance(model, (str, Path)) else model
    info = backend.info
    report = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    timings: Dict[str, float] = {}

    prep_share = _PREP_SHARE_N4 if _preprocessing(info, options).n4 else _PREP_SHARE_PLAIN
    infer_share = 1.0 - prep_share - _POST_SHARE
    prepared = prepare_image(image, info, options, cancel=cancel,
                             progress=lambda f, m="": report(prep_share * float(f), m))
    timings["preprocess_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    prediction = predict_prepared(
        prepared, backend, options, cancel=cancel,
        progress=lambda f, m="": report(prep_share + infer_share * float(f), m or "inference"))
    probs = prediction.probabilities
    timings["inference_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    report(prep_share + infer_share, "post-processing")
    label, classes = label_values(prediction.indices, info, options)
    frame = prepared.frame
    label_image = frame.image_from_canonical(label.astype(np.uint8))
    prob_image = None
    if probs is not None:
        moved = np.moveaxis(frame.from_canonical(probs), 0, -1)  # (z, y, x, K)
        prob_image = sitk.GetImageFromArray(np.ascontiguousarray(moved, dtype=np.float32), isVector=True)
        prob_image.CopyInformation(label_image)
    disagreement = None
    if prediction.disagreement is not None:
        disagreement = frame.image_from_canonical(prediction.disagreement.astype(np.float32))
    timings["postprocess_s"] = time.perf_counter() - t2
    report(1.0, "done")
    return SegmentationResult(label=label_image, classes=classes, probabilities=prob_image,
                              disagreement=disagreement, uncertainty=prediction.uncertainty,
                              seconds=time.perf_counter() - t0, timings=timings, warnings=list(prepared.warnings),
                              frame=frame)
