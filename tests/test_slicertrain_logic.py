"""Import SpineSegTraining.py with minimal stand-ins for Slicer's Python modules.

Slicer cannot be installed here. The stand-ins are just enough to execute the module's
top level (a NameError or bad import there shows up) and to run the Logic's plain-Python
parts: the panel's parameters become a valid command line, a run started by the Logic
reports a bad dataset with exit code 2, and "Use this model" keeps one entry per model in
the settings list. MRML behaviour is tested by SpineSegTrainingTest inside Slicer.
"""
from __future__ import annotations

import pathlib
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from slicer_stand_in import load_with_stand_in_slicer

from spineseg.inference.backends import DEVICES
from spineseg.moduleslogic import training_command
from spineseg.moduleslogic.model_registry import USER_MODELS_KEY
from spineseg.networks import network_names
from spineseg.training.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
MODULE_PY = ROOT / "SpineSegTraining" / "SpineSegTraining.py"


class FakeSettings:
    def __init__(self):
        self.values = {}
        self.synced = 0

    def value(self, key, default=None):
        return self.values.get(key, default)

    def setValue(self, key, value):
        self.values[key] = value

    def sync(self):
        self.synced += 1


@pytest.fixture
def module(monkeypatch):
    settings = FakeSettings()
    app = SimpleNamespace(userSettings=lambda: settings, processEvents=lambda: None)
    mod = load_with_stand_in_slicer(monkeypatch, MODULE_PY, "SpineSegTraining_under_test", app=app)
    mod._settings = settings
    return mod


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


def test_a_run_with_a_bad_dataset_ends_with_exit_code_2(module, tmp_path):
    (tmp_path / "empty").mkdir()
    opts = training_command.TrainingOptions(mode="train", data=str(tmp_path / "empty"), output=str(tmp_path / "run"),
                              epochs=1, device="cpu")
    run = module.SpineSegTrainingLogic.startRun(opts, python=sys.executable)
    deadline = time.monotonic() + 120
    lines = []
    while not run.job.finished and time.monotonic() < deadline:
        lines += run.poll()
        time.sleep(0.05)
    lines += run.poll()
    assert run.job.returncode == 2
    assert any(line.startswith("Error: ") and "empty" in line for line in lines), lines
    assert run.failure().startswith("Training failed:") and "empty" in run.failure()
    assert run.modelDirectory() is None
    assert not (tmp_path / "run" / "model").exists()


def test_use_this_model_registers_each_model_once(module, tmp_path):
    logic = module.SpineSegTrainingLogic
    a, b = tmp_path / "a", tmp_path / "b"
    assert logic.registerModel(a) == [str(a)]
    assert logic.registerModel(b) == [str(a), str(b)]
    assert logic.registerModel(a) == [str(b), str(a)]
    assert module._settings.values[USER_MODELS_KEY] == [str(b), str(a)]
    assert module._settings.synced == 3


def test_dependencies_are_installed_through_the_core_not_through_spineseg_unet(module, monkeypatch):
    monkeypatch.setitem(sys.modules, "SpineSegUNet", None)  # importing the other module would fail
    assert module.SpineSegTrainingLogic.ensureDependencies(interactive=False) is True  # torch and monai are here
    calls = []
    monkeypatch.setattr(module.requirements, "ensure_requirements",
                        lambda backend, util, **kw: calls.append((backend, kw["title"], kw["interactive"])) or False)
    assert module.SpineSegTrainingLogic.ensureDependencies(interactive=False) is False
    assert calls == [("torch", "SpineSeg Training", False)]
