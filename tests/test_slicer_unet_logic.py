"""Import SpineSegUNet.py with minimal stand-ins for Slicer's Python modules.

Slicer cannot be installed here. These stand-ins are just enough to execute the
module's top level (so a NameError or a bad import there shows up), and to check the
parts of the Logic that are plain Python: the parameter enums match the CLI and the
.ui, the panel's parameters become a valid ``spineseg segment`` command line, and
terminology is stored through the API each Slicer version has (5.8's tag as well, which
slicer-core 5.12+ no longer needs). MRML behaviour is tested against real slicer-core in Testing/.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from slicer_stand_in import load_with_stand_in_slicer

from spineseg.inference.backends import BACKENDS, DEVICES
from spineseg.moduleslogic.model_registry import bundled_model_dir
from spineseg.moduleslogic.process import failure_message
from spineseg.moduleslogic.segment_command import segment_command

ROOT = Path(__file__).resolve().parents[1]
MODULE_PY = ROOT / "SpineSegUNet" / "SpineSegUNet.py"
UI_FILE = ROOT / "SpineSegUNet" / "Resources" / "UI" / "SpineSegUNet.ui"


@pytest.fixture
def module(monkeypatch):
    return load_with_stand_in_slicer(
        monkeypatch, MODULE_PY, "SpineSegUNet_under_test",
        vtkMRMLScalarVolumeNode=type("vtkMRMLScalarVolumeNode", (), {}),
        vtkMRMLSegmentationNode=type("vtkMRMLSegmentationNode", (), {}),
        vtkSegment=SimpleNamespace(GetTerminologyEntryTagName=lambda: "TerminologyEntry"))


def _ui_items(name):
    root = ET.parse(UI_FILE).getroot()
    widget = [w for w in root.iter("widget") if w.get("name") == name][0]
    return [i.findtext("property/string") for i in widget.findall("item")]


def test_enums_match_cli_and_ui(module):
    assert [d.value for d in module.Device] == list(DEVICES)
    assert {b.value for b in module.Backend} == set(BACKENDS)  # the panel lists ONNX Runtime, its default, first
    # the parameterNodeWrapper fills the combo boxes from label(); the .ui shows the same texts in Designer
    assert [d.label() for d in module.Device] == _ui_items("deviceComboBox")
    assert [b.label() for b in module.Backend] == _ui_items("backendComboBox")
    assert [m.label() for m in module.ModelSource] == _ui_items("modelSourceComboBox")


def _params(module, **kw):
    base = dict(modelSource=module.ModelSource.FOLDER, modelPath=Path("/models/m"), device=module.Device.CPU,
                backend=module.Backend.ONNX, n4=True, n4Shrink=2, levels=False, tta=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_panel_parameters_become_a_valid_command_line(module):
    from spineseg.cli import build_parser

    logic = module.SpineSegUNetLogic()
    options = logic.segmentOptions(_params(module))
    assert (options.model, options.device, options.backend, options.n4, options.n4_shrink) == \
        (str(Path("/models/m")), "cpu", "onnx", True, 2)
    off = logic.segmentOptions(_params(module, n4=False, device=module.Device.CUDA, backend=module.Backend.TORCH))
    assert off.n4 is False and off.n4_shrink is None and off.device == "cuda" and off.backend == "torch"
    assert options.tta is False and logic.segmentOptions(_params(module, tta=True)).tta is True
    parser = build_parser()
    sub = [a for a in parser._actions if a.dest == "command"][0]
    if "segment" in sub.choices:
        for opts in (options, off):
            args = parser.parse_args(segment_command("py", ["in.nrrd"], "out.nrrd", opts)[3:])
            assert args.json and args.backend == opts.backend and args.n4 is opts.n4
        tta = logic.segmentOptions(_params(module, tta=True, levels=True))
        args = parser.parse_args(segment_command("py", ["in.nrrd"], "out.nrrd", tta)[3:])
        assert args.tta is True and args.levels is True


def test_levels_only_for_models_with_the_three_classes(module, tmp_path):
    import json

    from spineseg.modelfile import read_header

    logic = module.SpineSegUNetLogic()
    bundled = bundled_model_dir()
    if bundled is None:
        pytest.skip("no bundled model in Resources/")
    assert logic.segmentOptions(_params(module, modelPath=bundled, levels=True)).levels is True
    assert logic.segmentOptions(_params(module, modelPath=bundled, levels=False)).levels is False
    # a binary model: Levels is not passed on (the CLI would refuse it), and the panel says why
    binary = tmp_path / "binary"
    binary.mkdir()
    header = json.loads((bundled / "model.json").read_text())
    header["classes"] = [{"value": 1, "name": "spine", "color": [241, 214, 145]}]
    header["task"], header["architecture"]["out_channels"] = "binary", 1
    (binary / "model.json").write_text(json.dumps(header))
    assert [c.name for c in read_header(binary).classes] == ["spine"]
    assert logic.segmentOptions(_params(module, modelPath=binary, levels=True)).levels is False
    assert logic.levelsUnavailableReason(binary).endswith("this model labels spine")
    assert logic.levelsUnavailableReason(bundled) is None
    (binary / "model.json").write_text("{damaged")  # the model summary reports a damaged header, not this
    assert logic.levelsUnavailableReason(binary) is None


def test_model_directory(module, tmp_path):
    logic = module.SpineSegUNetLogic()
    assert logic.modelDirectory(_params(module, modelPath=Path(""))) is None  # empty path line edit
    assert logic.modelDirectory(_params(module, modelPath=tmp_path)) == tmp_path
    bundled = logic.modelDirectory(_params(module, modelSource=module.ModelSource.BUNDLED))
    assert bundled == bundled_model_dir()
    assert logic.segmentOptions(_params(module, modelPath=Path("."))).model is None


def test_terminology_is_stored_with_either_api(module):
    calls = []
    new_style = SimpleNamespace(SetTerminology=lambda entry: calls.append(("SetTerminology", entry)))
    old_style = SimpleNamespace(SetTag=lambda tag, entry: calls.append((tag, entry)))
    module.setSegmentTerminology(new_style, "e1")
    module.setSegmentTerminology(old_style, "e2")
    assert calls == [("SetTerminology", "e1"), ("TerminologyEntry", "e2")]


BATCH = ROOT / "SpineSegUNet" / "Scripts" / "segment_folder.py"


def _run_batch(module, monkeypatch, capsys, *args):
    import runpy

    exits = []
    sys.modules["slicer"].util.exit = exits.append
    monkeypatch.setitem(sys.modules, "SpineSegUNet", module)
    monkeypatch.setattr(sys, "argv", [str(BATCH), *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script adds its module folder
    runpy.run_path(str(BATCH), run_name="__main__")
    assert len(exits) == 1, "the batch script must end through slicer.util.exit exactly once"
    return exits[0], capsys.readouterr().err


def test_batch_script_bad_arguments_exit_2(module, monkeypatch, capsys, tmp_path):
    code, err = _run_batch(module, monkeypatch, capsys, "--input", str(tmp_path / "nope"), "--output", str(tmp_path))
    assert code == 2 and "not a folder" in err
    code, err = _run_batch(module, monkeypatch, capsys, "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert code == 2 and "no NIfTI/NRRD/MHA images" in err
    code, err = _run_batch(module, monkeypatch, capsys, "--output", str(tmp_path))
    assert code == 2 and "--input" in err


def test_batch_script_refuses_existing_outputs(module, monkeypatch, capsys, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "case1.nii.gz").write_bytes(b"x")
    (out / "case1.seg.nrrd").write_bytes(b"old")
    model = tmp_path / "model"
    model.mkdir()
    code, err = _run_batch(module, monkeypatch, capsys, "--input", str(src), "--output", str(out),
                           "--model", str(model))
    assert code == 2 and "--overwrite" in err and "case1.seg.nrrd" in err
    assert (out / "case1.seg.nrrd").read_bytes() == b"old"
    code, err = _run_batch(module, monkeypatch, capsys, "--input", str(src), "--output", str(out),
                           "--model", str(model), "--device", "tpu")
    assert code == 2 and "device 'tpu'" in err


def test_failure_names_the_volume_not_the_temporary_file(module, tmp_path):
    input_path = str(tmp_path / "SpineSegUNet-x" / "input.nrrd")
    job = SimpleNamespace(succeeded=False, cancelled=False,
                          failure=lambda: failure_message(2, stderr_lines=[
                              f"spineseg: error: {input_path}: image is 2D; segment a 3D volume"]))
    volume = SimpleNamespace(GetName=lambda: "T2 sag")
    run = module.SegmentationRun(job, str(tmp_path), volume, input_path, str(tmp_path / "seg.nrrd"), None, None, False)
    assert run.failureMessage() == "Segmentation failed: volume 'T2 sag': image is 2D; segment a 3D volume."
    assert not run.succeeded
    ok = SimpleNamespace(succeeded=True, cancelled=False, failure=lambda: "")
    run = module.SegmentationRun(ok, str(tmp_path), volume, input_path, str(tmp_path / "missing.nrrd"), None, None,
                                 False)
    assert not run.succeeded and "wrote no result file" in run.failureMessage()
