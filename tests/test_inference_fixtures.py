"""Model fixtures for the inference, CLI and ONNX tests (imported by those modules).

``random_model``: a tiny untrained hybrid (for errors, geometry, cancel: fast).
``trained_model``: a tiny hybrid trained on low-resolution phantoms with the short
Dice + cross-entropy loop below and committed under ``tests/data`` (training it in
every test run takes minutes on 2 shared cores). ``random_model`` is cached under
pytest's base temp folder, so modules that import it share one copy per session.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence, Tuple

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


def phantom_cases(folder: Path, seeds: Sequence[int]) -> Path:
    """``folder`` holding ``ph<seed>_image.nii.gz`` / ``ph<seed>_label.nii.gz`` small phantom pairs (a data folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image, label = small_phantom(seed)
        sitk.WriteImage(image, str(folder / f"ph{seed}_image.nii.gz"))
        sitk.WriteImage(label, str(folder / f"ph{seed}_label.nii.gz"))
    return folder


def save_tiny(path: Path, network, *, task: str = "multiclass", window=(12, 64, 64), dtype: str = "float32") -> Path:
    from spineseg.modelfile import ModelHeader, save_model

    header = ModelHeader.create("tiny-test", "hybrid", task=task, hparams=dict(TINY), window=tuple(window),
                                spacing=(SMALL_SPACING[2], SMALL_SPACING[1], SMALL_SPACING[0]),
                                preprocessing=dict(PREP))
    return save_model(path, network, header, overwrite=True, dtype=dtype)


def build_tiny(task: str = "multiclass", seed: int = 0):
    import torch

    from spineseg.networks import build_network

    torch.manual_seed(seed)
    return build_network("hybrid", out_channels=1 if task == "binary" else 4, **TINY)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2.0 * (a & b).sum() / max(1, a.sum() + b.sum()))


def train_tiny(path: Path, *, steps: int = 60, seed: int = 0, depth: int = 6, crop: int = 64, batch: int = 2,
               lr: float = 1e-2, dtype: str = "float32") -> Path:
    """Dice + CE on random depth x crop x crop windows of 3 phantoms; returns the saved model folder."""
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
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            x, y = data[rng.integers(len(data))]
            d0 = int(rng.integers(0, x.shape[-3] - depth + 1))
            h0, w0 = (int(rng.integers(0, x.shape[-2] - crop + 1)), int(rng.integers(0, x.shape[-1] - crop + 1)))
            xs.append(x[..., d0:d0 + depth, h0:h0 + crop, w0:w0 + crop])
            ys.append(y[..., d0:d0 + depth, h0:h0 + crop, w0:w0 + crop])
        x, y = torch.stack(xs), torch.stack(ys)
        logits = net(x)
        prob = torch.softmax(logits, 1)
        onehot = torch.nn.functional.one_hot(y, 4).permute(0, 4, 1, 2, 3).float()
        inter = (prob * onehot).sum((0, 2, 3, 4))
        dice_loss = 1 - ((2 * inter + 1) / (prob.sum((0, 2, 3, 4)) + onehot.sum((0, 2, 3, 4)) + 1))[1:].mean()
        loss = torch.nn.functional.cross_entropy(logits, y) + dice_loss
        for group in opt.param_groups:
            group["lr"] = lr * (1.0 - step / steps) + 1e-4  # linear decay: settles in few steps
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return save_tiny(path, net, dtype=dtype)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "inference_random_model"
    if not (path / "model.json").is_file():
        save_tiny(path, build_tiny())
    return path


#: trained here by ``python tests/test_inference_fixtures.py 200 12 64 2 0.01 --save tests/data/inference-tiny-model``
#: (a few minutes on 2 busy cores, too slow for every test run); retrain it when the hybrid's weights layout changes
TRAINED = Path(__file__).resolve().parent / "data" / "inference-tiny-model"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """The committed tiny hybrid trained on phantoms (float16 weights, 0.6 MB).

    When it no longer loads (the hybrid's weight layout changed), the same recipe
    retrains it here (about 45 s with one torch thread on the loaded 2-core machine).
    """
    from spineseg.errors import InputError
    from spineseg.modelfile import load_model

    try:
        load_model(TRAINED)
        return TRAINED
    except InputError:
        path = tmp_path_factory.getbasetemp() / "inference_trained_model"
        if not (path / "model.json").is_file():
            train_tiny(path, steps=200, depth=12, crop=64, batch=2, lr=1e-2)  # one thread: tests/conftest.py
        return path


if __name__ == "__main__":  # how long the training takes and what it reaches
    import sys
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    save = None
    if "--save" in sys.argv:
        i = sys.argv.index("--save")
        save = Path(sys.argv[i + 1])
        del sys.argv[i:i + 2]
    import torch

    torch.set_num_threads(1)  # a second spinning OpenMP thread is 10x slower on a loaded 2-core machine
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    extra = {k: type(v)(sys.argv[i + 2]) for i, (k, v) in enumerate([("depth", 6), ("crop", 64), ("batch", 2),
                                                                     ("lr", 1e-2)]) if len(sys.argv) > i + 2}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        model = train_tiny(save or Path(tmp) / "m", steps=steps, dtype="float16" if save else "float32", **extra)
        print(f"trained {steps} steps in {time.time() - t:.1f} s")
        from spineseg.inference import InferenceOptions, segment_image

        image, label = small_phantom(7)
        res = segment_image(image, model, options=InferenceOptions(device="cpu"))
        got, ref = sitk.GetArrayFromImage(res.label), sitk.GetArrayFromImage(label)
        print("union DSC", dice(got > 0, ref > 0), [dice(got == v, ref == v) for v in (1, 2, 3)])
