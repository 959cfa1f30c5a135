"""SpineSeg Training's logic on real MRML: the curve table, series and chart nodes it draws."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_PY = ROOT / "SpineSegTraining" / "SpineSegTraining.py"


@pytest.fixture
def training(harness):
    return harness.load_module(MODULE_PY, "SpineSegTraining")


def monitor_with(events):
    from spineseg.moduleslogic.run_monitor import RunMonitor

    monitor = RunMonitor()
    for event in events:
        monitor.feed(event)
    return monitor


def epochs(model, fold, n, start=1):
    return [{"event": "epoch", "model": model, "fold": fold, "epoch": e, "epochs": 5, "loss": 1.0 / e,
             "val_dsc": 0.5 + 0.05 * e} for e in range(start, start + n)]


def test_curves_one_table_per_training_two_charts_same_colour(harness, training):
    import slicer

    logic = training.SpineSegTrainingLogic()
    charts = logic.updateCurves(monitor_with(epochs("hybrid", 0, 3) + epochs("hybrid", 1, 2)))
    assert set(charts) == {"loss", "val_dsc"}
    tables = slicer.util.getNodesByClass("vtkMRMLTableNode")
    assert len(tables) == 2
    for column, chart in charts.items():
        assert chart.GetName() == training.CHART_NAMES[column]
        assert chart.GetNumberOfPlotSeriesNodes() == 2
    first = [charts[c].GetNthPlotSeriesNode(0) for c in ("loss", "val_dsc")]
    assert first[0].GetColor() == first[1].GetColor()
    assert first[0].GetTableNode() is first[1].GetTableNode()
    table = first[0].GetTableNode()
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(table, "epoch"), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table, "loss"), [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table, "val_dsc"), [0.55, 0.6, 0.65])


def test_curves_update_in_place_and_clear_removes_only_ours(harness, training):
    import slicer

    logic = training.SpineSegTrainingLogic()
    mine = harness.scene.AddNewNodeByClass("vtkMRMLTableNode", "a table of the user's")
    events = epochs("hybrid", 0, 2)
    logic.updateCurves(monitor_with(events))
    count = harness.scene.GetNumberOfNodes()
    charts = logic.updateCurves(monitor_with(events + epochs("hybrid", 0, 2, start=3)))
    assert harness.scene.GetNumberOfNodes() == count  # the same nodes, longer columns
    table = charts["loss"].GetNthPlotSeriesNode(0).GetTableNode()
    assert list(slicer.util.arrayFromTableColumn(table, "epoch")) == [1.0, 2.0, 3.0, 4.0]
    logic.clearCurves()
    left = [harness.scene.GetNthNode(i) for i in range(harness.scene.GetNumberOfNodes())]
    assert not [n for n in left if n.GetAttribute(training.CURVES_ATTRIBUTE)]
    assert slicer.util.getNodesByClass("vtkMRMLTableNode") == [mine]


def test_register_model_stores_it_in_the_settings_the_segment_panel_reads(harness, training, tmp_path):
    from spineseg.moduleslogic import model_registry

    older, model = tmp_path / "older", tmp_path / "model"
    for folder in (older, model):
        folder.mkdir()
        (folder / "model.json").write_text("{}")
    logic = training.SpineSegTrainingLogic()
    logic.registerModel(older)
    logic.registerModel(model)
    models = logic.registerModel(model)  # "Use this model" clicked twice: stored once, newest first
    assert models == [str(model.resolve()), str(older.resolve())]
    stored = harness.app.userSettings().value(model_registry.USER_MODELS_KEY)
    assert model_registry.user_model_dirs(stored) == [model.resolve(), older.resolve()]
