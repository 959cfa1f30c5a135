"""Flip test-time augmentation: flips undone exactly, disagreement and uncertainty, both backends, the CLI switch."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from spineseg.cli import main
from spineseg.errors import InputError
from spineseg.inference import InferenceOptions, segment_image, tta
from test_inference import _backend, _oblique, _SignNet
from test_inference_fixtures import random_model, small_phantom, trained_model  # noqa: F401  (fixtures)
from test_onnx import trained_onnx  # noqa: F401  (fixture)


def _first_half(volume: np.ndarray, progress) -> np.ndarray:
    """Ignores the voxels: class 1 in the first half of every axis it is shown, so only un-flipping moves it."""
    _, d, h, w = volume.shape
    fg = np.zeros((d, h, w), dtype=np.float32)
    fg[: d // 2] = 1.0
    progress(1.0, "")
    return np.stack([1.0 - fg, fg])


def _pointwise(volume: np.ndarray, progress) -> np.ndarray:
    """Depends on each voxel alone: every flip gives the same answer."""
    fg = 1.0 / (1.0 + np.exp(-volume[0]))
    return np.stack([1.0 - fg, fg]).astype(np.float32)


def test_flips_are_undone_before_averaging():
    volume = np.zeros((1, 4, 3, 5), dtype=np.float32)
    seen = []
    out = tta.average_flips(_first_half, volume, tta.DEFAULT_FLIPS, "multiclass", lambda f, m: seen.append(f))
    # pass 1 labels slices 0-1, the mirrored pass (flipped back) slices 2-3: every voxel has one dissenting pass
    np.testing.assert_allclose(out.probabilities, 0.5)
    np.testing.assert_allclose(out.disagreement, 0.5)
    assert out.uncertainty == 1.0
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_equivariant_predictor_has_no_disagreement():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, 5, 6, 7)).astype(np.float32)
    out = tta.average_flips(_pointwise, volume, tta.ALL_FLIPS, "multiclass")
    np.testing.assert_allclose(out.probabilities, _pointwise(volume, None), atol=1e-6)
    assert not out.disagreement.any() and out.uncertainty == 0.0
    assert len(tta.ALL_FLIPS) == 8 and len(set(tta.ALL_FLIPS)) == 8


@pytest.mark.parametrize("flips", [[()], [(), (3,)], [(), (0, 0)], [(0,), (0,)]])
def test_bad_flip_sets_are_refused(flips):
    with pytest.raises(InputError, match="TTA"):
        InferenceOptions(tta=True, tta_flips=flips).check()


class _SliceAsymmetric(torch.nn.Module):
    """Class 1 where the next slice is brighter than the previous one: mirroring the slices flips the answer."""

    multiple = 1

    def forward(self, x):
        diff = torch.zeros_like(x)
        diff[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
        return torch.cat([torch.zeros_like(x), diff * 10.0], dim=1)


def _own_spacing_backend(image, net=None):
    from spineseg.geometry import CanonicalFrame

    return _backend(net=net, spacing=CanonicalFrame.of(image, warn=False).canonical_spacing)


def test_engine_tta_result_on_the_input_grid():
    image = _oblique((30, 26, 8), (0.5, 0.5, 4.0), (2, 0, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = segment_image(image, _own_spacing_backend(image), options=InferenceOptions(device="cpu"))
        same = segment_image(image, _own_spacing_backend(image), options=InferenceOptions(device="cpu", tta=True))
        odd = segment_image(image, _own_spacing_backend(image, _SliceAsymmetric()),
                            options=InferenceOptions(device="cpu", tta=True))
    assert plain.disagreement is None and plain.uncertainty is None
    # a voxel-wise network: the mirrored pass agrees everywhere
    assert np.array_equal(sitk.GetArrayFromImage(same.label), sitk.GetArrayFromImage(plain.label))
    assert same.uncertainty == 0.0 and not sitk.GetArrayFromImage(same.disagreement).any()
    # a slice-order network: the two passes disagree wherever it segments anything
    dis = odd.disagreement
    for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(dis, attr)() == getattr(image, attr)()
    values = sitk.GetArrayFromImage(dis)
    assert set(np.unique(values)) <= {0.0, 0.5} and (values == 0.5).mean() > 0.3
    assert odd.uncertainty > 0.5


def test_engine_tta_with_resampling_keeps_the_grid():
    image = _oblique((40, 36, 6), (0.4, 0.4, 4.0), (0, 1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = segment_image(image, _backend(net=_SliceAsymmetric(), spacing=(4.0, 0.8, 0.8)),
                            options=InferenceOptions(device="cpu", tta=True, probabilities=True))
    assert res.disagreement.GetSize() == image.GetSize() == res.label.GetSize()
    assert res.probabilities.GetSize() == image.GetSize()
    values = sitk.GetArrayFromImage(res.disagreement)
    assert 0.0 <= values.min() and values.max() <= 0.5 + 1e-6 and values.max() > 0


def test_backends_agree_under_tta(trained_onnx):
    image, _ = small_phantom(11)
    out = {}
    for backend in ("torch", "onnx"):
        out[backend] = segment_image(image, trained_onnx,
                                     options=InferenceOptions(device="cpu", backend=backend, tta=True))
    a, b = (sitk.GetArrayFromImage(out[k].label) for k in ("torch", "onnx"))
    assert (a == b).mean() >= 0.999 and (a > 0).any()
    da, db = (sitk.GetArrayFromImage(out[k].disagreement) for k in ("torch", "onnx"))
    assert (da == db).mean() >= 0.999
    assert abs(out["torch"].uncertainty - out["onnx"].uncertainty) < 2e-3


def test_segment_cli_tta_switch(tmp_path, random_model, capsys):
    src = tmp_path / "p.nii.gz"
    sitk.WriteImage(small_phantom(3)[0], str(src))
    reported = {}
    for flag in ("--tta", "--no-tta"):
        out = tmp_path / f"s{flag}.nii.gz"
        assert main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu",
                     "--json", flag]) == 0
        done = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"done"' in line][-1]
        reported[flag] = done["outputs"][0].get("uncertainty")
    assert isinstance(reported["--tta"], float) and 0.0 <= reported["--tta"] <= 1.0
    assert reported["--no-tta"] is None


def _upper_half(volume: np.ndarray, progress) -> np.ndarray:
    """Ignores the voxels: class 1 in the first half of the superior-inferior axis, as the volume is shown."""
    _, d, h, w = volume.shape
    fg = np.zeros((d, h, w), dtype=np.float32)
    fg[:, : h // 2] = 1.0
    return np.stack([1.0 - fg, fg])


def test_uncertainty_is_that_of_the_left_right_pair():
    """A network that depends on which way up the volume is, not on left and right: the in-plane passes
    disagree with the others (the disagreement map shows it), the left-right pair does not (uncertainty 0)."""
    volume = np.zeros((1, 4, 6, 5), dtype=np.float32)
    out = tta.average_flips(_upper_half, volume, tta.INPLANE_FLIPS, "multiclass")
    assert out.disagreement.max() == pytest.approx(0.25) and out.uncertainty == 0.0
    # without the left-right pair the uncertainty is that of all passes
    alone = tta.average_flips(_upper_half, volume, ((), (1,)), "multiclass")
    assert alone.uncertainty == 1.0


def test_segment_cli_tta_inplane(tmp_path, random_model, capsys, monkeypatch):
    src = tmp_path / "p.nii.gz"
    sitk.WriteImage(small_phantom(3)[0], str(src))
    out = tmp_path / "s.nii.gz"
    averaged = []
    real = tta.average_flips
    monkeypatch.setattr(tta, "average_flips", lambda p, v, flips, *a, **k: averaged.append(flips) or real(p, v, flips, *a, **k))
    assert main(["segment", str(src), "-o", str(out), "--model", str(random_model), "--device", "cpu",
                 "--json", "--tta-inplane"]) == 0
    assert averaged == [tta.INPLANE_FLIPS]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert isinstance(lines[-1]["outputs"][0]["uncertainty"], float)
    capsys.readouterr()
    assert main(["segment", str(src), "-o", str(tmp_path / "t.nii.gz"), "--model", str(random_model),
                 "--device", "cpu", "--tta-inplane", "--no-tta"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tta-inplane and --no-tta contradict each other" in err[0]
    assert not (tmp_path / "t.nii.gz").exists()
