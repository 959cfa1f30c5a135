"""Model fixtures for the inference, CLI and ONNX tests (imported by those modules).

``random_model``: a tiny untrained hybrid (for errors, geometry, cancel: fast).
``trained_model``: a tiny hybrid trained here on low-resolution phantoms with a short
Dice + cross-entropy loop, so segmentation quality is testable without shipped weights.
Both are cached under pytest's base temp folder, so modules that import these
fixtures share one copy per session.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk

#: low-resolution phantom geometry: 880x880 in-plane at 0.345 mm -> 96x96 at 3.16 mm
SMALL_SIZE = (96, 96, 12)
SMALL_SPACING = (0.345 * 880 / 96, 0.345 * 880 / 96, 4.4)
TINY = {"width": 4}
PREP = {"n4": False, "normalization": "zscore-foreground"}


def small_phantom(seed: int, **kwargs) -> Tuple[sitk.Image, sitk.Image]:
    from spineseg.phantom import make_phantom

    ph = make_phantom(size=SMALL_SIZE, spacing=SMALL_SPACING, seed=seed, **kwargs)
    return ph.image, ph.label


def save_tiny(path: Path, network, *, task: str = "multiclass", window=(12, 64, 64)) -> Path:
    from spineseg.modelfile import ModelHeader, save_model

    header = ModelHeader.create("tiny-test", "hybrid", task=task, hparams=dict(TINY), window=tuple(window),
                                spacing=(SMALL_SPACING[2], SMALL_SPACING[1], SMALL_SPACING[0]),
                                preprocessing=dict(PREP))
    return save_model(path, network, header, overwrite=True)


def build_tiny(task: str = "multiclass", seed: int = 0):
    import torch

    from spineseg.networks import build_network

    torch.manual_seed(seed)
    return build_network("hybrid", out_channels=1 if task == "binary" else 4, **TINY)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2.0 * (a & b).sum() / max(1, a.sum() + b.sum()))


def train_tiny(path: Path, *, steps: int = 60, seed: int = 0) -> Path:
    """Dice + CE on random 12x64x64 crops of 3 phantoms; returns the saved model folder."""
    import torch

    from spineseg.geometry import CanonicalFrame
    from spineseg.preprocessing import PreprocessingConfig

    config = PreprocessingConfig.from_dict(PREP)
    data = []
    for s in range(3):
        image, label = small_phantom(100 + s)
        frame = CanonicalFrame.of(image)
        x = config.apply(image)
        y = np.ascontiguousarray(frame.to_canonical(sitk.GetArrayFromImage(label)))
        data.append((torch.from_numpy(x)[None], torch.from_numpy(y.astype(np.int64))))
    net = build_tiny(seed=seed)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    crop = 64
    for step in range(steps):
        xs, ys = [], []
        for _ in range(2):
            x, y = data[rng.integers(len(data))]
            h0, w0 = (int(rng.integers(0, x.shape[-2] - crop + 1)), int(rng.integers(0, x.shape[-1] - crop + 1)))
            xs.append(x[..., h0:h0 + crop, w0:w0 + crop])
            ys.append(y[..., h0:h0 + crop, w0:w0 + crop])
        x, y = torch.stack(xs), torch.stack(ys)
        logits = net(x)
        prob = torch.softmax(logits, 1)
        onehot = torch.nn.functional.one_hot(y, 4).permute(0, 4, 1, 2, 3).float()
        inter = (prob * onehot).sum((0, 2, 3, 4))
        dice_loss = 1 - ((2 * inter + 1) / (prob.sum((0, 2, 3, 4)) + onehot.sum((0, 2, 3, 4)) + 1))[1:].mean()
        loss = torch.nn.functional.cross_entropy(logits, y) + dice_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return save_tiny(path, net)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "inference_random_model"
    if not (path / "model.json").is_file():
        save_tiny(path, build_tiny())
    return path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "inference_trained_model"
    if not (path / "model.json").is_file():
        train_tiny(path)
    return path


if __name__ == "__main__":  # how long the training takes and what it reaches
    import sys
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        model = train_tiny(Path(tmp) / "m", steps=steps)
        print(f"trained {steps} steps in {time.time() - t:.1f} s")
        from spineseg.inference import InferenceOptions, segment_image

        image, label = small_phantom(7)
        res = segment_image(image, model, options=InferenceOptions(device="cpu"))
        got, ref = sitk.GetArrayFromImage(res.label), sitk.GetArrayFromImage(label)
        print("union DSC", dice(got > 0, ref > 0), [dice(got == v, ref == v) for v in (1, 2, 3)])
