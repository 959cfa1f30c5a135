"""Import SpineSegTraining.py with minimal stand-ins for Slicer's Python modules.

Slicer cannot be installed here. The stand-ins are just enough to execute the module's
top level (a NameError or bad import there shows up) and to run the Logic's plain-Python
parts: the panel's parameters become a valid command line. A run with a bad dataset, "Use this
model", the curves and SpineSegTrainingTest run against real slicer-core in Testing/.
"""
from __future__ import annotations

import pathlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from slicer_stand_in import load_with_stand_in_slicer

from spineseg.inference.backends import DEVICES
from spineseg.moduleslogic import training_command
from spineseg.networks import network_names
from spineseg.training.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
MODULE_PY = ROOT / "SpineSegTraining" / "SpineSegTraining.py"


@pytest.fixture
def module(monkeypatch):
    return load_with_stand_in_slicer(monkeypatch, MODULE_PY, "SpineSegTraining_under_test")


def _params(module, **kw):
    values = dict(dataFolder=pathlib.Path("/data"), architecture="hybrid", cvModels="", preset=module.Preset.DEFAULT,
                  epochs=0, folds=5, binary=False, device=module.Device.AUTO, gpus="",
                  outputFolder=pathlib.Path("/runs/a"))
    values.update(kw)
    return SimpleNamespace(**values)


def test_parameter_choices_match_the_cli(module):
    assert {p.value for p in module.Preset} == set(PRESETS)
    assert [d.value for d in module.Device] == list(DEVICES)
    assert module.ARCHITECTURES == list(network_names())
    annotations = module.SpineSegTrainingParameterNode.__annotations__
    assert set(annotations) == {"dataFolder", "architecture", "cvModels", "preset", "epochs", "folds", "binary",
                                "device", "gpus", "outputFolder"}


def test_panel_parameters_become_command_lines(module):
    logic = module.SpineSegTrainingLogic
    opts = logic.trainingOptions(_params(module), "train")
    argv = training_command.build_command(opts, python="/py")
    assert argv[3:7] == ["train", "/data", "-o", "/runs/a"] and "--epochs" not in argv  # 0: the preset's
    opts = logic.trainingOptions(_params(module, cvModels=" hybrid, no-ux ,", epochs=3, folds=3,
                                         preset=module.Preset.PAPER, device=module.Device.CUDA, gpus="1"), "cv")
    argv = training_command.build_command(opts, python="/py")
    assert argv[argv.index("--models") + 1] == "hybrid,no-ux"
    assert argv[argv.index("--epochs") + 1] == "3" and argv[argv.index("--folds") + 1] == "3"
    assert argv[argv.index("--preset") + 1] == "paper" and argv[argv.index("--device") + 1] == "cuda:1"
    # cv with an empty compare list cross-validates the chosen architecture
    opts = logic.trainingOptions(_params(module, architecture="resunet"), "cv")
    assert opts.models == ["resunet"]
    with pytest.raises(ValueError, match="output"):
        logic.trainingOptions(_params(module, outputFolder=pathlib.Path(".")), "train")
    with pytest.raises(ValueError, match="GPU index"):
        logic.trainingOptions(_params(module, gpus="0,a"), "train")


def test_dependencies_are_installed_through_the_core_not_through_spineseg_unet(module, monkeypatch):
    monkeypatch.setitem(sys.modules, "SpineSegUNet", None)  # importing the other module would fail
    assert module.SpineSegTrainingLogic.ensureDependencies(interactive=False) is True  # torch and monai are here
    calls = []
    monkeypatch.setattr(module.requirements, "ensure_requirements",
                        lambda backend, util, **kw: calls.append((backend, kw["title"], kw["interactive"])) or False)
    assert module.SpineSegTrainingLogic.ensureDependencies(interactive=False) is False
    assert calls == [("torch", "SpineSeg Training", False)]
