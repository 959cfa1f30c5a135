"""The slicer-core harness: a real MRML scene and real module logics on one application logic.

Skips the whole tier when slicer-core is not installed (no wheel for this Python or platform).
Each test gets a fresh scene; ``harness.load_module`` imports a module file the way Slicer does,
with the stand-ins of ``stand_ins.py`` (the only ones) for what the wheel lacks.
"""
from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (no wheel for this Python/platform)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)

import stand_ins  # noqa: E402

LOGICS = {
    "segmentations": ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    "volumes": ("Volumes", "vtkSlicerVolumesLogic"),
    "terminologies": ("Terminologies", "vtkSlicerTerminologiesModuleLogic"),
    "plots": ("Plots", "vtkSlicerPlotsLogic"),
}


class Harness(SimpleNamespace):
    def load_module(self, module_py: Path, name: str) -> ModuleType:
        """Import a scripted module file under ``name`` (its folder on sys.path, as Slicer has it)."""
        folder = str(module_py.parent)
        if folder not in sys.path:
            self.monkeypatch.syspath_prepend(folder)
        spec = importlib.util.spec_from_file_location(name, module_py)
        module = importlib.util.module_from_spec(spec)
        self.monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    def instantiate(self, module: ModuleType, class_name: str, module_py: Path):
        """Create the module object as Slicer does at startup, then emit startupCompleted()."""
        parent = SimpleNamespace(path=str(module_py), title="", categories=[], dependencies=[], contributors=[],
                                 helpText="", acknowledgementText="")
        instance = getattr(module, class_name)(parent)
        self.app.completeStartup()
        return instance

    def node_ids(self):
        scene = self.scene
        return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}

    def user_segmentation(self, volume, transform_id=None):
        """A segmentation the user made on ``volume`` ("mine", under ``transform_id`` if given): one "lesion"
        segment, a sphere at the image centre; returns it and the lesion's voxels on the volume's grid."""
        import vtk

        output = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
        if transform_id is not None:
            output.SetAndObserveTransformNodeID(transform_id)
        output.CreateDefaultDisplayNodes()
        output.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        sphere = vtk.vtkSphereSource()
        sphere.SetRadius(10.0)
        sphere.SetCenter(volume.GetImageData().GetCenter())
        sphere.Update()
        output.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "my lesion", (1.0, 0.0, 0.0), "lesion")
        return output, slicer.util.arrayFromSegmentBinaryLabelmap(output, "lesion", volume).copy()

    def node_classes(self, ids=None):
        scene = self.scene
        ids = self.node_ids() if ids is None else ids
        return sorted(scene.GetNodeByID(i).GetClassName() for i in ids)


@pytest.fixture
def harness(monkeypatch, tmp_path):
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    terminology_user = tmp_path / "terminology-user"
    terminology_user.mkdir()
    logics = {}
    for key, (module_name, class_name) in LOGICS.items():
        logic = getattr(slicer, class_name)()
        if key == "terminologies":
            logic.SetUserContextsPath(str(terminology_user))  # never the user's own settings folder
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module_name, logic)
        logics[key] = logic
    temporary = tmp_path / "slicer-temp"
    temporary.mkdir()
    app = stand_ins.install(slicer, scene=scene, application_logic=app_logic, logics=logics,
                            temporary_path=str(temporary), monkeypatch=monkeypatch)
    yield Harness(scene=scene, app=app, app_logic=app_logic, logics=logics, monkeypatch=monkeypatch,
                  tmp_path=tmp_path)
    scene.Clear(1)
    for logic in logics.values():
        logic.SetMRMLScene(None)
    gc.collect()
