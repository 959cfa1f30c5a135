"""SpineSeg UNet with Levels on, on real MRML: one segment per level from the job's .seg.nrrd, the
measurements table, the review lines, jumping the slice views to a level, and what a failure leaves.

The truth each test compares with is the job's own ``.levels.json`` (what ``spineseg segment --levels``
wrote for the very volume the module handed it), copied before the module loads the result. The input
is an oblique sagittal phantom with its origin off zero, so RAS, LPS and voxel order all differ.
What cannot run here: the Qt side (the table view's selection signal calling the jump, the labels'
text); the functions they call are tested.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
MODULE_PY = ROOT / "SpineSegUNet" / "SpineSegUNet.py"
MODEL = ROOT / "Resources" / "Models" / "spineseg-default"

pytest.importorskip("slicerio", reason="segment --levels writes the .seg.nrrd with slicerio")


@pytest.fixture
def unet(harness):
    module = harness.load_module(MODULE_PY, "SpineSegUNet")
    harness.instantiate(module, "SpineSegUNet", MODULE_PY)
    return module


def oblique_phantom(tmp_path) -> Path:
    """A thick-slice sagittal phantom, tilted 0.2 rad, origin off zero: big enough for a lumbar read-out."""
    from spineseg.phantom import make_phantom

    c, s = np.cos(0.2), np.sin(0.2)
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    sagittal = np.array([0.0, 0, -1, 1, 0, 0, 0, -1, 0]).reshape(3, 3)
    phantom = make_phantom(seed=2, size=(220, 220, 12), spacing=(1.38, 1.38, 4.4),
                           orientation=tuple(float(v) for v in (tilt @ sagittal).ravel()))
    image = phantom.image
    image.SetOrigin((12.5, -40.0, 31.0))
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def levels_options(tta=False):
    from spineseg.moduleslogic.segment_command import SegmentOptions

    return SegmentOptions(model=str(MODEL), device="cpu", backend="onnx", n4=False, levels=True, tta=tta)


def finished_run(logic, volume, tmp_path, outputSegmentation=None, tta=False):
    """A levels run that has finished (not yet loaded), and a copy of the read-out it wrote."""
    run = logic.startSegmentation(volume, levels_options(tta), outputSegmentation=outputSegmentation)
    run.job.wait(timeout=300)
    assert run.succeeded, run.failureMessage()
    from spineseg.levels.outputs import level_paths

    truth = tmp_path / "truth.levels.json"
    shutil.copyfile(level_paths(Path(run.outputPath)).json, truth)
    return run, json.loads(truth.read_text())


def ras_centroid(volume, mask):
    """Mean RAS position of a mask given on the volume's voxel grid ((k, j, i) array order)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    k, j, i = np.nonzero(mask)
    ijk1 = np.stack([i, j, k, np.ones_like(i)]).astype(float)
    return (ijk_to_ras @ ijk1)[:3].mean(axis=1)


def slice_nodes(harness):
    """The three slice views' nodes as a Slicer layout has them (axial, sagittal, coronal)."""
    import slicer

    nodes = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = slicer.vtkMRMLSliceNode()
        node.SetLayoutName(name)
        node.SetName(name)
        harness.scene.AddNode(node)
        node.SetOrientation(orientation)
        nodes.append(node)
    return nodes


def slice_center(node):
    m = node.GetSliceToRAS()
    return np.array([m.GetElement(r, 3) for r in range(3)])


def test_levels_segments_table_review_and_jump(harness, unet, tmp_path):
    import slicer
    import vtk
    from spineseg.levels.segments import COLOURS
    from spineseg.moduleslogic import levels_readout

    volume = unet.loadVolumeFile(str(oblique_phantom(tmp_path)))
    logic = unet.SpineSegUNetLogic()
    before = harness.node_ids()
    run, truth = finished_run(logic, volume, tmp_path)
    try:
        segmentationNode = logic.finishSegmentation(run)
    finally:
        run.cleanup()
    new = harness.node_ids() - before
    assert harness.node_classes(new) == ["vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode",
                                         "vtkMRMLTableNode"]
    structures = truth["structures"]
    names = [s["name"] for s in structures]
    assert {"L4", "L4-L5", "spinal canal"} <= set(names)

    # one segment per structure, in order, named, with the job's voxels on the input grid
    segmentation = segmentationNode.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [segmentation.GetSegment(i).GetName() for i in ids] == names == run.segmentNames
    assert ids[names.index("L4-L5")] == "l4_l5" and ids[names.index("spinal canal")] == "spinal_canal"
    for sid, s in zip(ids, structures):
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, volume)
        assert int(mask.sum()) == s["voxels"], s["name"]
        tag = vtk.reference("")
        assert segmentation.GetSegment(sid).GetTag(unet.LEVEL_TAG, tag) and str(tag) == str(s["label"])

    # colours: neighbours of a kind alternate between the kind's two colours
    for kind in ("vertebra", "disc"):
        colours = [tuple(round(c * 255) for c in segmentation.GetSegment(sid).GetColor())
                   for sid, s in zip(ids, structures) if s["kind"] == kind]
        assert len(colours) >= 4
        assert colours == [COLOURS[kind][i % 2] for i in range(len(colours))], kind
        assert all(a != b for a, b in zip(colours, colours[1:]))

    # terminology: each vertebra and disc its own code, every entry found in the loaded SpineSeg context
    terminologies = harness.logics["terminologies"]
    context = unet.terminology.CATEGORY_CONTEXT
    codes = {}
    for sid, s in zip(ids, structures):
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(unet.getSegmentTerminology(segmentation.GetSegment(sid)),
                                                         entry), s["name"]
        assert entry.GetTerminologyContextName() == context
        assert terminologies.UpdateEntryFromLoadedTerminologies(entry, [context], []), s["name"]
        codes[s["name"]] = (entry.GetTypeObject().GetCodeValue(), entry.GetTypeObject().GetCodeMeaning())
    assert codes["L4"] == ("11994002", "L4 vertebra") and codes["L1"] == ("66794005", "L1 vertebra")
    assert len({codes[n] for n in names if n in ("L1", "L2", "L3", "L4", "L5")}) == 5
    assert codes["spinal canal"] == ("61853006", "Spinal canal")
    assert codes["L4-L5"] == ("84020006", "L4/L5 disc") and codes["L5-S1"] == ("715056000", "L5/S1 disc")
    discs = [n for n, s in zip(names, structures) if s["kind"] == "disc"]
    assert len({codes[n] for n in discs}) == len(discs)  # each disc its own code

    # the table: one row per structure, named columns with titles and units, the job's numbers
    tableNode = run.measurementsTable
    assert unet.measurementsTableOf(segmentationNode) is tableNode
    table = tableNode.GetTable()
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == \
        [c.name for c in levels_readout.TABLE_COLUMNS]
    assert table.GetNumberOfRows() == len(structures)
    assert tableNode.GetColumnTitle("middle_height_mm") == "Middle height"
    assert tableNode.GetColumnUnitLabel("middle_height_mm") == "mm"
    assert tableNode.GetColumnUnitLabel("volume_mm3") == "mm3"
    assert tableNode.GetColumnProperty("volume_mm3", "unitCodeMeaning") == "cubic millimeter"
    assert tableNode.GetColumnType("middle_height_mm") == 11  # VTK_DOUBLE
    assert tableNode.GetLocked() and tableNode.GetUseColumnTitleAsColumnHeader()
    spacing = volume.GetSpacing()
    expected = levels_readout.table_rows(truth, spacing[0] * spacing[1] * spacing[2])
    for r, (row, s) in enumerate(zip(expected, structures)):
        for c, column in enumerate(levels_readout.TABLE_COLUMNS):
            got = table.GetValue(r, c)
            if column.type == "string":
                assert got.ToString() == row[c], (s["name"], column.name)
            elif row[c] is None:
                assert np.isnan(got.ToDouble()), (s["name"], column.name)
            else:
                assert got.ToDouble() == pytest.approx(row[c], abs=1e-9), (s["name"], column.name)
    l4 = names.index("L4")
    assert 15 < table.GetValueByName(l4, "middle_height_mm").ToDouble() < 45

    # the review and level-name lines come with the table (kept in a saved scene)
    review, levelNames = unet.readoutLines(tableNode)
    assert review == levels_readout.review_text(truth) and levelNames == levels_readout.levels_text(truth)
    assert review.startswith("Review recommended: " if truth["review"]["flag"] else "No review flag")
    assert truth["review"]["uncertainty"] is None  # flip TTA off (the panel's default)
    assert levels_readout.summary_text(truth).endswith("spinal canal")

    # a row's position is the level's centroid in RAS, where the slice views jump to
    red, yellow, green = slice_nodes(harness)
    for name in ("L4", "L4-L5", "spinal canal"):
        sid = ids[names.index(name)]
        centroid = ras_centroid(volume, slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, volume))
        np.testing.assert_allclose(unet.structurePosition(tableNode, name), centroid, atol=2e-3)
        assert unet.jumpSlicesToStructure(tableNode, name)
        for node in (red, yellow, green):
            np.testing.assert_allclose(slice_center(node), centroid, atol=2e-3)
    assert unet.structurePosition(tableNode, "C1") is None and not unet.jumpSlicesToStructure(tableNode, "C1")


def test_levels_into_a_chosen_output_under_a_transform(harness, unet, tmp_path):
    """The chosen output is filled, not moved; the user's segments stay, an earlier read-out's go; a second
    read-out reuses the table; the jump goes to the level where it is shown (through the transform)."""
    import slicer
    import vtk

    volume = unet.loadVolumeFile(str(oblique_phantom(tmp_path)))
    transform = harness.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    rotation = vtk.vtkTransform()
    rotation.RotateZ(30)
    rotation.Translate(10.0, -5.0, 20.0)
    rotation.GetMatrix(matrix)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    output, mine = harness.user_segmentation(volume, transform.GetID())
    stale = output.GetSegmentation().AddEmptySegment("t2", "T2", (0.5, 0.5, 0.5))
    output.GetSegmentation().GetSegment(stale).SetTag(unet.LEVEL_TAG, "9")  # from an earlier read-out

    logic = unet.SpineSegUNetLogic()
    run, truth = finished_run(logic, volume, tmp_path, outputSegmentation=output, tta=True)
    # with flip TTA the review has its uncertainty; without (the other tests) it says it rests on plausibility
    assert 0.0 <= truth["review"]["uncertainty"] < 1.0
    try:
        assert logic.finishSegmentation(run) is output
        nodes = harness.node_ids()
        table = run.measurementsTable
        assert logic.finishSegmentation(run) is output  # the same read-out again: same table, no new nodes
        assert run.measurementsTable is table and harness.node_ids() == nodes
    finally:
        run.cleanup()
    assert output.GetTransformNodeID() == transform.GetID()
    segmentation = output.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = [s["name"] for s in truth["structures"]]
    assert ids[0] == "lesion" and [segmentation.GetSegment(i).GetName() for i in ids[1:]] == names
    assert segmentation.GetSegment("t2") is None
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(output, "lesion", volume), mine)

    # the table's centroid is in the volume's RAS; the jump goes through the transform to where it is shown
    name = "L3"
    local = ras_centroid(volume, slicer.util.arrayFromSegmentBinaryLabelmap(output, "l3", volume))
    world = np.array(rotation.TransformPoint(local))
    np.testing.assert_allclose(unet.structurePosition(table, name), world, atol=2e-3)
    assert np.linalg.norm(world - local) > 5  # the transform matters
    red, = slice_nodes(harness)[:1]
    unet.jumpSlicesToStructure(table, name)
    np.testing.assert_allclose(slice_center(red), world, atol=2e-3)


def test_levels_failures_leave_the_scene_unchanged(harness, unet, tmp_path):
    import slicer
    from spineseg.levels.outputs import level_paths

    volume = unet.loadVolumeFile(str(oblique_phantom(tmp_path)))
    logic = unet.SpineSegUNetLogic()
    before = harness.node_ids()
    run, truth = finished_run(logic, volume, tmp_path)
    paths = level_paths(Path(run.outputPath))
    try:
        # Slicer refuses the label map after the segmentation and table were made: both go again
        class RefusingLogic:
            def ImportLabelmapToSegmentationNode(self, *args):
                return False

        real = slicer.modules.segmentations
        harness.monkeypatch.setattr(slicer.modules, "segmentations", type("Handle", (), {"logic": RefusingLogic})())
        with pytest.raises(RuntimeError, match="could not import the per-level label map"):
            logic.finishSegmentation(run)
        harness.monkeypatch.setattr(slicer.modules, "segmentations", real)
        assert harness.node_ids() == before

        # a read-out and a segmentation file that disagree, a damaged read-out, a damaged .seg.nrrd
        changed = dict(truth, structures=truth["structures"][1:])
        paths.json.write_text(json.dumps(changed))
        with pytest.raises(RuntimeError, match="name different structures"):
            logic.finishSegmentation(run)
        assert harness.node_ids() == before
        paths.json.write_text("{")
        with pytest.raises(RuntimeError, match="per-level read-out was not loaded") as error:
            logic.finishSegmentation(run)
        assert "\n" not in str(error.value)
        assert harness.node_ids() == before
        # (a damaged .seg.nrrd is not tried: slicer-core's NRRD reader aborts the process on one)
        # a job that wrote no read-out has not succeeded
        paths.seg.unlink()
        assert not run.succeeded and "wrote no result file" in run.failureMessage()
    finally:
        run.cleanup()
    assert harness.node_ids() == before


def test_levels_off_is_the_three_class_result(harness, unet, tmp_path):
    """Levels off: one segment per class as before, no table; a binary model never gets --levels."""
    p = unet.SpineSegUNetLogic().getParameterNode()
    p.modelSource = unet.ModelSource.FOLDER
    p.modelPath = MODEL
    p.levels = False
    options = unet.SpineSegUNetLogic.segmentOptions(p)
    assert options.levels is False
    options.device, options.n4 = "cpu", False
    volume = unet.loadVolumeFile(str(oblique_phantom(tmp_path)))
    before = harness.node_ids()
    segmentationNode = unet.SpineSegUNetLogic().segment(volume, options)
    new = harness.node_ids() - before
    assert harness.node_classes(new) == ["vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode"]
    segmentation = segmentationNode.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == \
        ["vertebra", "intervertebral_disc", "spinal_canal"]
    assert unet.measurementsTableOf(segmentationNode) is None
    p.levels = True
    assert unet.SpineSegUNetLogic.segmentOptions(p).levels is True
