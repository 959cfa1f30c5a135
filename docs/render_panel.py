"""Render the SpineSeg UNet panel (SpineSegUNet/Resources/UI/SpineSegUNet.ui) to a PNG without Slicer.

Slicer's own widgets stand in as their Qt base classes (qMRMLNodeComboBox -> QComboBox,
ctkCollapsibleButton -> QGroupBox, ctkPathLineEdit -> QLineEdit, qMRMLWidget -> QWidget)
in a temporary copy of the .ui, loaded with PySide6's QUiLoader on the offscreen platform.
Three states side by side: idle (what the module shows now, including the model message
from spineseg.moduleslogic.model_registry), running with Advanced expanded (Segment turned into Cancel,
progress with ETA text from spineseg.moduleslogic.process.progress_text), and done with Levels on: the
review lines and the measurements table as the module fills them (spineseg.moduleslogic.levels_readout),
for the per-level read-out of a phantom's true labels (spineseg.levels.read_levels; no network runs here).

    pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen python docs/render_panel.py [-o docs/images/segment_panel.png]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from spineseg.moduleslogic import levels_readout, model_registry, process

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "SpineSegUNet" / "Resources" / "UI" / "SpineSegUNet.ui"
STAND_INS = {"qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QComboBox",
             "ctkCollapsibleButton": "QGroupBox", "ctkPathLineEdit": "QLineEdit", "qMRMLTableView": "QTableView"}


def standin_ui(path: Path) -> tuple:
    """A copy of the .ui with Slicer widgets replaced; returns (xml text, names of collapsed sections)."""
    tree = ET.parse(path)
    root = tree.getroot()
    collapsed = []
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls == "ctkCollapsibleButton":
            for prop in widget.findall("property"):
                if prop.get("name") == "text":
                    prop.set("name", "title")
                if prop.get("name") == "collapsed":
                    if prop.findtext("bool") == "true":
                        collapsed.append(widget.get("name"))
                    widget.remove(prop)
        if cls in STAND_INS:
            widget.set("class", STAND_INS[cls])
        for prop in list(widget.findall("property")):
            if prop.get("name") in ("nodeTypes", "showChildNodeTypes", "addEnabled", "removeEnabled",
                                    "noneEnabled", "noneDisplay", "renameEnabled", "filters"):
                widget.remove(prop)
    for tag in ("customwidgets", "connections"):
        for el in root.findall(tag):
            root.remove(el)
    return ET.tostring(root, encoding="unicode"), collapsed


def phantom_readout():
    """The per-level read-out of a phantom's true labels, as ``segment --levels`` writes it (.levels.json)."""
    import json

    from spineseg.levels import read_levels
    from spineseg.levels.outputs import json_bytes
    from spineseg.levels.review import review_case
    from spineseg.phantom import make_phantom

    phantom = make_phantom(seed=2, size=(220, 220, 12), spacing=(1.38, 1.38, 4.4))
    result = read_levels(phantom.label)
    result.review = review_case(result, phantom.label, None)
    return json.loads(json_bytes(result)), float(1.38 * 1.38 * 4.4)


def fill_levels(panel, readout, voxel_mm3: float) -> None:
    """The Levels section as SpineSegUNet's showReadout leaves it: review lines, then the table with the
    headers qMRMLTableModel shows ("title [unit]") and values as vtkVariant prints them."""
    import math

    from PySide6.QtGui import QStandardItem, QStandardItemModel
    from PySide6.QtWidgets import QLabel, QTableView

    panel.findChild(QLabel, "reviewLabel").setText(levels_readout.review_text(readout))
    panel.findChild(QLabel, "levelNamesLabel").setText(levels_readout.levels_text(readout))
    view = panel.findChild(QTableView, "measurementsTableView")
    model = QStandardItemModel(view)
    headers = [c.title + (f" [{c.unit}]" if c.unit else "") for c in levels_readout.TABLE_COLUMNS]
    model.setHorizontalHeaderLabels(headers)
    for row in levels_readout.table_rows(readout, voxel_mm3):
        items = []
        for value in row:
            if value is None:
                text = "nan"
            elif isinstance(value, float):
                text = "nan" if math.isnan(value) else f"{value:.6g}"
            else:
                text = str(value)
            items.append(QStandardItem(text))
        model.appendRow(items)
    view.setModel(model)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(22)
    view.resizeColumnsToContents()
    view.selectRow(next(i for i, s in enumerate(readout["structures"]) if s["name"] == "L4"))


def build_panel(app, xml: str, collapsed, state: str, readout=None):
    from PySide6.QtCore import QBuffer, QByteArray
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QComboBox, QGroupBox, QLabel, QLineEdit, QProgressBar, QPushButton, QWidget

    running = state == "running"

    buf = QBuffer()
    buf.setData(QByteArray(xml.encode()))
    panel = QUiLoader().load(buf)
    find = lambda cls, name: panel.findChild(cls, name)  # noqa: E731

    find(QComboBox, "inputSelector").addItem("spider_1 T2 sagittal")
    find(QComboBox, "outputSelector").addItem("Create new segmentation")
    for name in ([] if running else collapsed):  # a collapsed ctkCollapsibleButton shows only its title
        box = find(QGroupBox, name)
        for child in box.findChildren(QWidget):
            child.hide()
        box.setTitle("\u25B8 " + box.title())
        box.setFixedHeight(28)
    for box in panel.findChildren(QGroupBox):
        if not box.title().startswith("\u25B8"):
            box.setTitle("\u25BE " + box.title())

    bundled = model_registry.bundled_model_dir()
    info = find(QLabel, "modelInfoLabel")
    button = find(QPushButton, "segmentButton")
    bar = find(QProgressBar, "progressBar")
    status = find(QLabel, "statusLabel")
    path_edit = find(QLineEdit, "modelPathLineEdit")
    levels_box = find(QGroupBox, "levelsCollapsibleButton")
    if state == "done":
        fill_levels(panel, *readout)
        bar.setValue(100)
        status.setText(f"Done: {levels_readout.summary_text(readout[0])}.")
    else:  # the module shows the Levels section once there is a read-out
        levels_box.hide()
    if running:
        find(QComboBox, "modelSourceComboBox").setCurrentIndex(1)
        path_edit.setText("/data/models/spineseg-hybrid")
        info.setText("spineseg-hybrid (hybrid + ONNX): vertebra, intervertebral disc, spinal canal")
        button.setText("Cancel")
        button.setEnabled(True)
        event = {"event": "progress", "fraction": 0.42, "eta_s": 6.3, "message": "inference"}
        bar.setValue(int(round(100 * event["fraction"])))
        status.setText(process.progress_text(event))
    if not running:
        path_edit.setEnabled(False)
        find(QLabel, "modelPathLabel").setEnabled(False)
        info.setText("No bundled model in this installation: choose a model folder." if bundled is None
                     else model_registry.model_summary(bundled))
        button.setEnabled(bundled is not None)
    panel.resize(380, panel.sizeHint().height())
    return panel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "segment_panel.png"))
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    font = QFont("DejaVu Sans", 9)
    app.setFont(font)
    xml, collapsed = standin_ui(UI)
    readout = phantom_readout()
    panels = [build_panel(app, xml, collapsed, state, readout) for state in ("idle", "running", "done")]
    captions = ["Idle, bundled model" if model_registry.bundled_model_dir() else "Idle (no bundled model installed)",
                "Running (Advanced expanded)", "Done, Levels on (a phantom's true labels)"]
    for panel in panels:  # laid out first: the sizes below are the ones grab() draws
        panel.show()
    app.processEvents()
    gap, top = 24, 30
    width = sum(p.width() for p in panels) + gap * (len(panels) + 1)
    height = max(p.height() for p in panels) + top + gap
    canvas = QPixmap(width, height)
    canvas.fill(QColor("#e6e6e6"))
    painter = QPainter(canvas)
    painter.setFont(QFont("DejaVu Sans", 10, QFont.Bold))
    x = gap
    for panel, caption in zip(panels, captions):
        panel.show()
        app.processEvents()
        painter.drawText(x, 4, panel.width(), top - 8, Qt.AlignLeft | Qt.AlignVCenter, caption)
        painter.drawPixmap(x, top, panel.grab())
        x += panel.width() + gap
    painter.end()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".png", delete=False) as tmp:
        tmp_name = tmp.name
    if not canvas.save(tmp_name, "PNG"):
        os.unlink(tmp_name)
        print(f"render_panel: error: could not write {out}", file=sys.stderr)
        return 1
    os.replace(tmp_name, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
