"""The bundled default model: complete, documented, honest about itself, and it segments the bundled sample."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.modelfile import default_model_path, load_model, read_header, sha256_file
from spineseg.samples import bundled_sample

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "Resources" / "Models" / "README.md"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = default_model_path()
    assert path is not None, "Resources/Models/spineseg-default is missing"
    return Path(path)


def test_bundled_model_is_complete_and_small(model_dir):
    header = read_header(model_dir)
    assert [c.name for c in header.classes] == ["vertebra", "intervertebral disc", "spinal canal"]
    assert all(len(c.color) == 3 for c in header.classes)
    assert tuple(header.window) == (12, 128, 128)
    assert header.preprocessing.get("n4") is True
    assert header.training.get("validation_cases") and header.training.get("command")
    onnx = model_dir / header.onnx["file"]
    assert sha256_file(onnx) == header.onnx["sha256"]  # the Slicer module's default backend finds it
    total = sum(p.stat().st_size for p in model_dir.iterdir())
    assert total <= 20 * 2 ** 20
    load_model(model_dir)  # weights match the header (shapes, checksum)


def test_model_card_states_its_status_credit_and_measured_numbers(model_dir):
    text = CARD.read_text()
    assert "CPU-trained, not the final model" in text
    assert "SPIDER" in text and "CC BY 4.0" in text and "not for diagnosis" in text.lower()
    assert "scripts/train_default_model.sh" in text and "scripts/evaluate_model.py" in text
    # every held-out figure in the card's table is the one recorded in model.json
    heldout = read_header(model_dir).metrics["heldout"]["conditions"]
    for cond, row_name in (("thin", "thin (as stored)"), ("thick", "thick (~4.4 mm)")):
        row = re.search(r"^\| " + re.escape(row_name) + r" \|(.*)$", text, re.M)
        assert row, f"no '{row_name}' row in the card's held-out table"
        cells = [c.strip() for c in row.group(1).split("|")]
        r = heldout[cond]
        expected = [f"{r['mean_dsc']:.3f}"] + [f"{v:.3f}" for v in r["per_class_dsc"].values()] + [f"{r['union_dsc']:.3f}"]
        assert cells[:len(expected)] == expected


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_segments_the_bundled_sample(model_dir, backend, tmp_path):
    """The README's main job, through the command line: every structure found where the labels are."""
    from spineseg.cli import main

    image, label = bundled_sample()
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(image), "-o", str(out), "--device", "cpu", "--backend", backend]) == 0
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    for value in (1, 2, 3):
        a, b = got == value, ref == value
        dice = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        assert dice > SAMPLE_MIN_DSC, f"label {value}: DSC {dice:.3f}"


def _sample_min_dsc() -> float:
    source = (ROOT / "SpineSegUNet" / "SpineSegUNet.py").read_text()
    return float(re.search(r"^SAMPLE_MIN_DSC = ([0-9.]+)", source, re.M).group(1))


SAMPLE_MIN_DSC = _sample_min_dsc()  # one bound for the Slicer self-test and this test
