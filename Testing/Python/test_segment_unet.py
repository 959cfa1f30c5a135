"""SpineSeg UNet's logic on real MRML: the segment path, what it leaves in the scene, terminology.

The network is the bundled model on ONNX Runtime, without N4 (the tier checks MRML conversion and
scene bookkeeping; N4 and the model are tested in tests/). The CLI label map each test compares
with comes from ``spineseg segment`` on the very file the module wrote.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
MODULE_PY = ROOT / "SpineSegUNet" / "SpineSegUNet.py"
MODEL = ROOT / "Resources" / "Models" / "spineseg-default"

#: direction cosines (SimpleITK, LPS) of the phantom's orientations
SAGITTAL_LEFT_HANDED = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # det -1: Slicer re-indexes such files


def _oblique():
    c, s = np.cos(0.3), np.sin(0.3)
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    sagittal = np.array([0.0, 0, -1, 1, 0, 0, 0, -1, 0]).reshape(3, 3)
    return tuple(float(v) for v in (tilt @ sagittal).ravel())


ORIENTATIONS = {"axial": "axial", "coronal": "coronal", "sagittal-left-handed": SAGITTAL_LEFT_HANDED,
                "oblique": _oblique()}


@pytest.fixture
def unet(harness):
    module = harness.load_module(MODULE_PY, "SpineSegUNet")
    harness.instantiate(module, "SpineSegUNet", MODULE_PY)
    return module


def phantom_file(tmp_path, orientation="sagittal", name="phantom", seed=3) -> Path:
    from spineseg.phantom import make_phantom

    size = (48, 48, 12) if orientation in ("sagittal", SAGITTAL_LEFT_HANDED) or isinstance(orientation, tuple) \
        else (48, 12, 48) if orientation == "coronal" else (48, 48, 12)
    spacing = tuple(4.4 if n == 12 else 2.4 for n in size)
    phantom = make_phantom(size=size, spacing=spacing, seed=seed, orientation=orientation, supersample=1)
    path = tmp_path / f"{name}.nrrd"
    sitk.WriteImage(phantom.image, str(path))
    return path


def options(module):
    from spineseg.moduleslogic.segment_command import SegmentOptions

    return SegmentOptions(model=str(MODEL), device="cpu", backend="onnx", n4=False)


def cli_labels(path: Path, tmp_path: Path) -> sitk.Image:
    from spineseg.cli import main

    out = tmp_path / (path.stem + "_cli.nrrd")
    assert main(["segment", str(path), "-o", str(out), "--model", str(MODEL), "--backend", "onnx",
                 "--device", "cpu", "--no-n4"]) == 0
    return sitk.ReadImage(str(out))


def lps_to_ras(image: sitk.Image) -> np.ndarray:
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    m = np.eye(4)
    m[:3, :3] = np.diag([-1, -1, 1]) @ direction
    m[:3, 3] = np.diag([-1, -1, 1]) @ np.asarray(image.GetOrigin())
    return m


def exported(harness, segmentationNode, reference):
    """The segmentation exported to a label map on the reference volume's grid with Slicer's own logic."""
    import slicer
    import vtk

    labelNode = harness.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(i))
    assert harness.logics["segmentations"].ExportSegmentsToLabelmapNode(segmentationNode, ids, labelNode, reference)
    array = slicer.util.arrayFromVolume(labelNode).copy()
    m = vtk.vtkMatrix4x4()
    labelNode.GetIJKToRASMatrix(m)
    matrix = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    harness.scene.RemoveNode(labelNode.GetDisplayNode()) if labelNode.GetDisplayNode() else None
    harness.scene.RemoveNode(labelNode)
    return array, matrix


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_segment_path_equals_the_cli(harness, unet, tmp_path, orientation):
    """Module result exported by Slicer = the CLI's label map on the same file, voxel for voxel and in space."""
    path = phantom_file(tmp_path, ORIENTATIONS[orientation])
    volume = unet.loadVolumeFile(str(path))
    written = unet.imageFromVolume(volume)
    sitk.WriteImage(written, str(tmp_path / "as_slicer_has_it.nrrd"))
    cli = cli_labels(tmp_path / "as_slicer_has_it.nrrd", tmp_path)
    segmentationNode = unet.SpineSegUNetLogic().segment(volume, options(unet))
    array, ijk_to_ras = exported(harness, segmentationNode, volume)
    values = {s.segment_id: s.value for s in unet.terminology.segment_specs(
        unet.model_registry.result_classes(None, MODEL))}
    # export numbers segments 1..n in segment order; map back to the model's label values
    segmentation = segmentationNode.GetSegmentation()
    lut = np.zeros(256, np.uint8)
    for i in range(segmentation.GetNumberOfSegments()):
        lut[i + 1] = values[segmentation.GetNthSegmentID(i)]
    cli_array = sitk.GetArrayFromImage(cli)
    assert cli_array.any()
    np.testing.assert_array_equal(lut[array], cli_array)
    np.testing.assert_allclose(ijk_to_ras, lps_to_ras(cli), atol=1e-9)
    # and the CLI on the original file (Slicer may have re-indexed it) labels the same physical voxels
    original = cli_labels(path, tmp_path)
    resampled = sitk.Resample(original, cli, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), cli_array)


def test_failure_and_cancel_leave_nothing(harness, unet, tmp_path):
    from spineseg.moduleslogic.segment_command import SegmentOptions

    volume = unet.loadVolumeFile(str(phantom_file(tmp_path)))
    before = harness.node_ids()
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(RuntimeError) as failure:
        unet.SpineSegUNetLogic().segment(volume, SegmentOptions(model=str(empty), device="cpu", backend="onnx",
                                                                 n4=False))
    assert "\n" not in str(failure.value)
    assert harness.node_ids() == before
    # Cancel: the job is stopped mid-run; nothing reaches the scene, the temporary files go
    logic = unet.SpineSegUNetLogic()
    run = logic.startSegmentation(volume, options(unet))
    run.cancel()
    run.job.wait(timeout=120)
    assert not run.succeeded
    run.cleanup()
    assert not os.path.exists(run.tempDir)
    assert harness.node_ids() == before
    # Slicer refuses the label map after the segmentation node was made: it goes again, display node included
    import slicer

    class RefusingLogic:
        def ImportLabelmapToSegmentationNode(self, *args):
            return False

    run = logic.startSegmentation(volume, options(unet))
    run.job.wait(timeout=300)
    harness.monkeypatch.setattr(slicer.modules, "segmentations", type("Handle", (), {"logic": RefusingLogic})())
    try:
        with pytest.raises(RuntimeError, match="could not import"):
            logic.finishSegmentation(run)
    finally:
        run.cleanup()
    assert harness.node_ids() == before


def test_reused_output_keeps_user_segments_and_transform(harness, unet, tmp_path):
    import slicer

    volume = unet.loadVolumeFile(str(phantom_file(tmp_path)))
    output, mine = harness.user_segmentation(volume)
    assert mine.any()
    result = unet.SpineSegUNetLogic().segment(volume, options(unet), outputSegmentation=output)
    assert result is output
    assert output.GetSegmentation().GetSegment("lesion") is not None
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(output, "lesion", volume), mine)
    assert output.GetTransformNodeID() is None
    # an output under another transform is refused before anything runs, and not moved
    transform = harness.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    output.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="different transform"):
        unet.SpineSegUNetLogic().segment(volume, options(unet), outputSegmentation=output)
    assert output.GetTransformNodeID() == transform.GetID()


def test_output_removed_during_the_run_is_one_sentence(harness, unet, tmp_path):
    volume = unet.loadVolumeFile(str(phantom_file(tmp_path)))
    output = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "target")
    logic = unet.SpineSegUNetLogic()
    run = logic.startSegmentation(volume, options(unet), outputSegmentation=output)
    run.job.wait(timeout=300)
    harness.scene.RemoveNode(output)
    before = harness.node_ids()
    try:
        with pytest.raises(RuntimeError, match="output segmentation was removed") as error:
            logic.finishSegmentation(run)
    finally:
        run.cleanup()
    assert "\n" not in str(error.value)
    assert harness.node_ids() == before


def test_label_map_is_never_the_default_input(harness, unet, tmp_path):
    path = phantom_file(tmp_path)
    label = unet.loadVolumeFile(str(path), labelmap=True)
    assert label.IsA("vtkMRMLLabelMapVolumeNode")
    assert harness.scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode") is label  # what the panel used to take
    assert unet.defaultInputVolume() is None
    volume = unet.loadVolumeFile(str(path))
    assert unet.defaultInputVolume() is volume


def test_result_nodes_terminology_and_seg_nrrd_round_trip(harness, unet, tmp_path):
    """One run: the scene gains exactly the segmentation and its display node; every segment's terminology
    resolves in the SpineSeg context the module loaded; a .seg.nrrd round trip keeps it all."""
    import slicer

    terminologies = harness.logics["terminologies"]
    context = unet.terminology.CATEGORY_CONTEXT
    assert terminologies.IsTerminologyContextLoaded(context)  # loaded at startup by the module
    volume = unet.loadVolumeFile(str(phantom_file(tmp_path)))
    before = harness.node_ids()
    segmentationNode = unet.SpineSegUNetLogic().segment(volume, options(unet), show3D=True)
    new = harness.node_ids() - before
    assert harness.node_classes(new) == ["vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode"]
    assert segmentationNode.GetID() in new and segmentationNode.GetDisplayNode().GetID() in new

    segmentation = segmentationNode.GetSegmentation()
    specs = unet.terminology.segment_specs(unet.model_registry.result_classes(None, MODEL))
    assert segmentation.GetNumberOfSegments() == len(specs)
    for spec in specs:
        serialized = unet.getSegmentTerminology(segmentation.GetSegment(spec.segment_id))
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(serialized, entry)
        assert entry.GetTerminologyContextName() == context
        # found in the loaded context: Slicer fills in the entry's recommended colour from the file
        assert terminologies.UpdateEntryFromLoadedTerminologies(entry, [context], []), spec.name
        rgb = entry.GetTypeObject().GetRecommendedDisplayRGBValue()
        assert tuple(round(c / 255.0, 4) for c in rgb) == tuple(round(c, 4) for c in spec.color), spec.name

    storage = segmentationNode.CreateDefaultStorageNode()
    path = tmp_path / "result.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentationNode)
    reread = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(reread)
    a, b = segmentation, reread.GetSegmentation()
    assert a.GetNumberOfSegments() == b.GetNumberOfSegments() > 0
    for i in range(a.GetNumberOfSegments()):
        sid = a.GetNthSegmentID(i)
        sa, sb = a.GetSegment(sid), b.GetSegment(sid)
        assert sb is not None and sb.GetName() == sa.GetName()
        assert np.allclose(sb.GetColor(), sa.GetColor())
        assert unet.getSegmentTerminology(sb) == unet.getSegmentTerminology(sa) != ""
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(reread, sid, volume),
                                      slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, volume))
