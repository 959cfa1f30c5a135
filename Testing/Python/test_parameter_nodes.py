"""Both modules' parameter nodes on a real vtkMRMLScriptedModuleNode: values, node references, scene files."""
from __future__ import annotations

import pathlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def reload_scene(harness, tmp_path):
    """Save the scene to a .mrml file and read it back into the (cleared) same scene."""
    path = tmp_path / "scene.mrml"
    harness.scene.SetURL(str(path))
    assert harness.scene.Commit()
    harness.scene.Clear(1)
    harness.scene.SetURL(str(path))
    assert harness.scene.Connect()


def test_unet_parameters_round_trip(harness, tmp_path):
    unet = harness.load_module(ROOT / "SpineSegUNet" / "SpineSegUNet.py", "SpineSegUNet")
    volume = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mr")
    output = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    p = unet.SpineSegUNetLogic().getParameterNode()
    assert p.n4 is True and p.n4Shrink == 4 and p.backend is unet.Backend.ONNX and p.inputVolume is None
    assert p.levels is True and p.tta is False  # the per-level read-out on by default, flip TTA off
    p.inputVolume, p.outputSegmentation = volume, output
    p.n4, p.n4Shrink, p.device, p.backend = False, 8, unet.Device.CPU, unet.Backend.TORCH
    p.modelSource, p.modelPath, p.show3D = unet.ModelSource.FOLDER, pathlib.Path(tmp_path / "m"), False
    p.levels, p.tta = False, True
    with pytest.raises(ValueError):
        p.n4Shrink = 17  # WithinRange(1, 16)
    # one parameter node per module, found again by a new logic
    again = unet.SpineSegUNetLogic().getParameterNode()
    assert again.parameterNode is p.parameterNode
    reload_scene(harness, tmp_path)
    q = unet.SpineSegUNetLogic().getParameterNode()
    assert q.inputVolume.GetName() == "mr" and q.outputSegmentation.GetName() == "out"
    assert (q.n4, q.n4Shrink, q.device, q.backend, q.modelSource, q.show3D, q.levels) == (
        False, 8, unet.Device.CPU, unet.Backend.TORCH, unet.ModelSource.FOLDER, False, False)
    assert q.modelPath == tmp_path / "m"
    options = unet.SpineSegUNetLogic.segmentOptions(q)
    assert (options.model, options.device, options.backend, options.n4) == (str(tmp_path / "m"), "cpu", "torch", False)
    assert options.levels is False and options.tta is True


def test_training_parameters_round_trip(harness, tmp_path):
    training = harness.load_module(ROOT / "SpineSegTraining" / "SpineSegTraining.py", "SpineSegTraining")
    p = training.SpineSegTrainingLogic().getParameterNode()
    assert p.architecture == "hybrid" and p.folds == 5 and p.epochs == 0
    p.dataFolder, p.outputFolder = tmp_path / "data", tmp_path / "run"
    p.architecture, p.cvModels, p.preset, p.epochs, p.folds, p.binary, p.device, p.gpus = (
        "resunet", "hybrid,resunet", training.Preset.PAPER, 7, 3, True, training.Device.CPU, "")
    with pytest.raises(ValueError):
        p.architecture = "not-a-network"  # Choice(ARCHITECTURES)
    with pytest.raises(ValueError):
        p.folds = 1  # WithinRange(2, 20)
    reload_scene(harness, tmp_path)
    q = training.SpineSegTrainingLogic().getParameterNode()
    assert (q.dataFolder, q.outputFolder) == (tmp_path / "data", tmp_path / "run")
    assert (q.architecture, q.cvModels, q.preset, q.epochs, q.folds, q.binary, q.device) == (
        "resunet", "hybrid,resunet", training.Preset.PAPER, 7, 3, True, training.Device.CPU)
