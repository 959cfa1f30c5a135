"""ONNX export and the ONNX Runtime backend: dynamic shapes, no torch imported, agreement with torch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from test_inference_fixtures import random_model, small_phantom, trained_model  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, random_model) -> Path:
    target = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(random_model, target)
    assert main(["export", str(target), "--onnx"]) == 0
    return target


def test_export_records_checksum_and_refuses_overwrite(onnx_model, capsys):
    from spineseg.modelfile import read_header, sha256_file

    header = read_header(onnx_model)
    assert header.onnx["file"] == "model.onnx"
    assert header.onnx["sha256"] == sha256_file(onnx_model / "model.onnx")
    assert main(["export", str(onnx_model), "--onnx"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_dynamic_batch_depth_and_inplane(onnx_model):
    import onnxruntime as ort
    import torch

    from spineseg.modelfile import load_model

    session = ort.InferenceSession(str(onnx_model / "model.onnx"), providers=["CPUExecutionProvider"])
    net = load_model(onnx_model).network
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 1, 32, 64), (3, 1, 7, 96, 32)]:
        x = rng.normal(size=shape).astype(np.float32)
        got = session.run(None, {"image": x})[0]
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-3)


def test_onnx_backend_runs_without_torch(tmp_path, onnx_model):
    src = tmp_path / "p.nii.gz"
    image, _ = small_phantom(3)
    sitk.WriteImage(image, str(src))
    out = tmp_path / "s.nii.gz"
    code = (
        "import sys\n"
        "from spineseg.cli import main\n"
        f"rc = main(['segment', {str(src)!r}, '-o', {str(out)!r}, '--model', {str(onnx_model)!r}, "
        "'--backend', 'onnx', '--device', 'cpu', '--json'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'monai' not in sys.modules, 'monai was imported'\n"
        "print('NO_TORCH_OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "NO_TORCH_OK" in proc.stdout and out.is_file()


def test_tampered_onnx_is_refused(tmp_path, onnx_model, capsys):
    bad = tmp_path / "m"
    shutil.copytree(onnx_model, bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    src = tmp_path / "p.nii.gz"
    sitk.WriteImage(small_phantom(3)[0], str(src))
    rc = main(["segment", str(src), "-o", str(tmp_path / "s.nii.gz"), "--model", str(bad), "--backend", "onnx"])
    assert rc == 2 and "checksum" in capsys.readouterr().err
    assert not (tmp_path / "s.nii.gz").exists()


def test_onnx_backend_without_export_says_how(tmp_path, random_model, capsys):
    src = tmp_path / "p.nii.gz"
    sitk.WriteImage(small_phantom(3)[0], str(src))
    rc = main(["segment", str(src), "-o", str(tmp_path / "s.nii.gz"), "--model", str(random_model), "--backend", "onnx"])
    assert rc == 2 and "spineseg export" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory, trained_model) -> Path:
    from spineseg.export import export_onnx

    model = tmp_path_factory.mktemp("trained_onnx") / "m"
    shutil.copytree(trained_model, model)
    export_onnx(model)
    return model


@pytest.mark.parametrize("tile", [False, True])
def test_backends_agree_on_phantom(trained_onnx, tile):
    from spineseg.inference import InferenceOptions, segment_image

    model = trained_onnx
    image, _ = small_phantom(11)
    labels = []
    for backend in ("torch", "onnx"):
        res = segment_image(image, model, options=InferenceOptions(device="cpu", backend=backend, tile=tile))
        labels.append(sitk.GetArrayFromImage(res.label))
    agreement = float((labels[0] == labels[1]).mean())
    assert agreement >= 0.999, agreement
    assert (labels[0] > 0).any()
