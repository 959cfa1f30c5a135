"""Real Slicer (slicer-core's vtkMRMLSegmentationStorageNode) reads the read-out's .seg.nrrd back with its names.

Part of the slicer-core tier (Testing/run.sh), which puts slicer-core on the path.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
if not hasattr(slicer, "vtkMRMLSegmentationStorageNode"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)
pytest.importorskip("slicerio")


def test_slicer_reads_names_terminology_and_voxels(tmp_path):
    from spineseg.levels import levels_image, read_levels
    from spineseg.levels.outputs import level_paths, write_level_outputs
    from spineseg.phantom import make_phantom

    ph = make_phantom(seed=2, size=(220, 220, 12), spacing=(1.38, 1.38, 4.4))
    result = read_levels(ph.label)
    paths = level_paths(tmp_path / "case_seg.nii.gz")
    write_level_outputs(result, ph.label, paths, overwrite=False, written=[])

    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(paths.seg))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = [segmentation.GetSegment(i).GetName() for i in ids]
    assert names == result.names()
    l4 = segmentation.GetSegment(ids[names.index("L4")])
    assert "SCT^11994002^L4 vertebra" in l4.GetTerminology()
    assert "SCT^84020006^L4/L5 disc" in segmentation.GetSegment(ids[names.index("L4-L5")]).GetTerminology()
    # voxels: each segment's labelmap holds exactly that level's voxels
    expected = sitk.GetArrayFromImage(levels_image(result, ph.label))
    for sid, name in zip(ids, names):
        labelmap = slicer.vtkOrientedImageData()
        node.GetBinaryLabelmapRepresentation(sid, labelmap)
        scalars = labelmap.GetPointData().GetScalars()
        from vtk.util.numpy_support import vtk_to_numpy

        arr = vtk_to_numpy(scalars)
        count = int((arr > 0).sum())
        value = result.structure(name).label
        assert count == int((expected == value).sum()), name
