"""Inference engine without a model file: stitcher vs MONAI, progress/cancel, OOM fallback, geometry round trip."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from spineseg.errors import Cancelled
from spineseg.geometry import CanonicalFrame
from spineseg.inference import InferenceOptions, segment_image
from spineseg.inference import backends, postprocess, sliding
from spineseg.labels import SPINE_CLASSES, ClassInfo
from spineseg.modelfile import ModelHeader


def _ramp_predictor(x: np.ndarray) -> np.ndarray:
    """Depends on where a voxel sits in its window, so a wrong blend shows up."""
    d, h, w = x.shape[-3:]
    ramp = np.add.outer(np.add.outer(np.arange(d), np.arange(h)), np.arange(w)).astype(np.float32)
    return np.concatenate([x, x * 0.5 + ramp], axis=1)


def test_gaussian_matches_monai():
    from monai.data.utils import compute_importance_map

    for window in [(12, 128, 128), (5, 33, 20)]:
        ours = sliding.gaussian_weights(window)
        ref = compute_importance_map(window, mode="gaussian", sigma_scale=0.125).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape,window,overlap", [
    ((14, 70, 90), (12, 32, 32), 0.5),
    ((5, 20, 100), (12, 32, 32), 0.25),   # fewer slices and smaller in-plane than the window: padded
    ((12, 64, 64), (12, 64, 64), 0.5),    # exactly one window
])
def test_numpy_stitcher_matches_monai(shape, window, overlap):
    from monai.inferers import sliding_window_inference

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1,) + shape).astype(np.float32)
    ours = sliding.sliding_window(volume, _ramp_predictor, window=window, overlap=overlap, batch_size=3)
    ref = sliding_window_inference(
        torch.from_numpy(volume)[None], window, 3, lambda t: torch.from_numpy(_ramp_predictor(t.numpy())),
        overlap=overlap, mode="gaussian", sigma_scale=0.125)[0].numpy()
    assert ours.shape == (2,) + shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_progress_monotone_and_cancel_within_one_batch():
    volume = np.zeros((1, 12, 96, 96), np.float32)
    seen = []
    sliding.sliding_window(volume, _ramp_predictor, window=(12, 32, 32), overlap=0.5, batch_size=4,
                           progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0
    calls = []

    def predictor(x):
        calls.append(len(x))
        return _ramp_predictor(x)

    with pytest.raises(Cancelled):
        sliding.sliding_window(volume, predictor, window=(12, 32, 32), overlap=0.5, batch_size=4,
                               cancel=lambda: len(calls) >= 1)
    assert len(calls) == 1


def test_postprocess_decide_values_union_largest():
    probs = np.zeros((4, 1, 4, 6), np.float32)
    probs[0] = 1.0
    probs[1, 0, 0, :2] = 2.0   # class 1, component of 2 voxels
    probs[1, 0, 3, 5] = 2.0    # class 1, a stray voxel
    probs[3, 0, 2, 2:5] = 2.0  # class 3
    idx = postprocess.decide(probs, "multiclass")
    lab = postprocess.indices_to_values(idx, [1, 2, 3])
    assert lab[0, 3, 5] == 1 and lab[0, 2, 3] == 3
    clean = postprocess.keep_largest(lab, [1, 2, 3])
    assert clean[0, 3, 5] == 0 and clean[0, 0, :2].tolist() == [1, 1] and (clean == 3).sum() == 3
    assert set(np.unique(postprocess.union(lab))) == {0, 1}
    assert postprocess.decide(np.full((1, 1, 1, 2), 0.7, np.float32), "binary").tolist() == [[[1, 1]]]


def test_splitting_forward_halves_batch_on_oom():
    calls = []

    def net(x):
        calls.append(int(x.shape[0]))
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x * 2

    msgs = []
    forward = backends.SplittingForward(net, on_warning=msgs.append)
    x = torch.arange(8, dtype=torch.float32).reshape(8, 1)
    assert torch.equal(forward(x), x * 2)
    assert forward.max_batch == 2 and msgs
    calls.clear()
    forward(x)
    assert max(calls) == 2  # remembered: no more failed attempts


def test_cpu_fallback_after_oom_with_single_window():
    tried = []

    class Fake(backends.TorchBackend):
        def __init__(self):
            self.device = torch.device("cuda")

        def _run(self, volume, device, *, window, **kw):
            tried.append((device.type, tuple(window)))
            if device.type != "cpu":
                raise backends._DeviceOutOfMemory()
            return "ok", None

    with pytest.warns(UserWarning, match="CPU"):
        assert Fake().predict_volume(np.zeros((1, 2, 8, 8), np.float32), window=(2, 8, 8), overlap=0.5,
                                     batch=2, fallback_window=(2, 4, 4))[0] == "ok"
    assert tried == [("cuda", (2, 8, 8)), ("cuda", (2, 4, 4)), ("cpu", (2, 4, 4))]


# ---------------------------------------------------------------------- engine with a hand-made network
class _SignNet(torch.nn.Module):
    """Logits [0, x]: class 1 wherever the (unnormalised) input is positive. Exact, so geometry is testable."""

    multiple = 1

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), x * 10.0], dim=1)


def _backend(task="multiclass", classes=(SPINE_CLASSES[0],), net=None, spacing=(4.4, 0.345, 0.345)):
    header = ModelHeader.create("sign", "hybrid", task=task, classes=list(classes), window=(4, 16, 16),
                                spacing=tuple(spacing), preprocessing={"n4": False, "normalization": "none"})
    info = backends.ModelInfo(Path("."), header)

    return backends.TorchBackend(info, "cpu", network=net or _SignNet())


def _oblique(size, spacing, axes_perm, angle=0.3):
    rng = np.random.default_rng(1)
    arr = rng.normal(size=size[::-1]).astype(np.float32) + 0.1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -20.0, 5.0))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    perm = np.eye(3)[:, list(axes_perm)]
    img.SetDirection(tuple((rot @ perm).ravel()))
    return img


@pytest.mark.parametrize("size,spacing,perm", [
    ((40, 36, 3), (0.4, 0.4, 4.0), (0, 1, 2)),      # sagittal-like, fewer slices than the window
    ((5, 30, 34), (4.4, 0.5, 0.5), (2, 0, 1)),      # slices along x, permuted, oblique
    ((33, 6, 20), (0.6, 3.5, 0.6), (1, 2, 0)),
])
def test_geometry_round_trip_exact(size, spacing, perm):
    image = _oblique(size, spacing, perm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a model of the image's own spacing: no resampling, so the voxel-wise sign must come back exactly
        spacing = CanonicalFrame.of(image).canonical_spacing
        result = segment_image(image, _backend(spacing=spacing), options=InferenceOptions(device="cpu", batch=2))
    lab = result.label
    assert lab.GetSize() == image.GetSize()
    assert lab.GetSpacing() == image.GetSpacing() and lab.GetOrigin() == image.GetOrigin()
    assert lab.GetDirection() == image.GetDirection()
    expected = (sitk.GetArrayFromImage(image) > 0).astype(np.uint8)
    assert np.array_equal(sitk.GetArrayFromImage(lab), expected)


def test_engine_binary_union_probabilities_progress_cancel():
    image = _oblique((24, 20, 6), (0.4, 0.4, 4.0), (0, 1, 2))
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = segment_image(image, _backend(classes=(SPINE_CLASSES[2],)),
                            options=InferenceOptions(device="cpu", binary=True, probabilities=True, batch=1),
                            progress=lambda f, m: seen.append(f))
        arr = sitk.GetArrayFromImage(res.label)
        assert set(np.unique(arr)) <= {0, 1} and res.classes[0].name == "spine"
        assert res.probabilities.GetNumberOfComponentsPerPixel() == 2
        assert res.probabilities.GetSize() == image.GetSize()
        assert seen == sorted(seen) and seen[-1] == 1.0
        calls = []

        class Counting(_SignNet):
            def forward(self, x):
                calls.append(1)
                return super().forward(x)

        with pytest.raises(Cancelled):
            segment_image(image, _backend(net=Counting()), options=InferenceOptions(device="cpu", batch=1),
                          cancel=lambda: len(calls) >= 1)
        assert len(calls) == 1


def test_tile_mode_gives_same_labels():
    image = _oblique((50, 40, 12), (0.4, 0.4, 4.0), (0, 1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = segment_image(image, _backend(), options=InferenceOptions(device="cpu"))
        b = segment_image(image, _backend(), options=InferenceOptions(device="cpu", tile=True))
    assert np.array_equal(sitk.GetArrayFromImage(a.label), sitk.GetArrayFromImage(b.label))


def test_monai_and_numpy_stitchers_agree_in_the_torch_backend():
    """The GPU path (MONAI) and the CPU path (NumPy) of the torch backend blend identically."""
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(1, 7, 40, 52)).astype(np.float32)
    out = {}
    for stitcher in ("monai", "numpy"):
        backend = _backend()
        backend.stitcher = stitcher
        seen = []
        idx, probs = backend.predict_volume(volume, window=(4, 16, 16), overlap=0.5, batch=3,
                                            want_probabilities=True, progress=lambda f, m: seen.append(f))
        assert seen == sorted(seen) and seen[-1] == 1.0
        out[stitcher] = (idx, probs)
    np.testing.assert_allclose(out["monai"][1], out["numpy"][1], atol=1e-5)
    assert np.array_equal(out["monai"][0], out["numpy"][0])


def test_non_mr_intensities_warn():
    image = _oblique((24, 20, 6), (0.4, 0.4, 4.0), (0, 1, 2))
    ct = sitk.Cast(image * 500.0 - 1000.0, sitk.sitkFloat32)
    with pytest.warns(UserWarning, match="MR"):
        segment_image(ct, _backend(), options=InferenceOptions(device="cpu"))
