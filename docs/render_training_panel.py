"""Render the SpineSeg Training panel and its module icon to PNGs without Slicer.

The panel (SpineSegTraining/Resources/UI/SpineSegTraining.ui) is loaded with PySide6's
QUiLoader on the offscreen platform, Slicer's widgets standing in as Qt base classes
(``standin_ui`` of docs/render_panel.py). It is filled from a real run folder: the
dataset check of its data (``spineseg.moduleslogic.dataset_check``), the log and
curves replayed from the run's ``log.jsonl`` files through ``RunMonitor``, and the
results table from ``read_results``. The curves are drawn with matplotlib beside the
panel, standing in for the Slicer plot view the module fills.

    pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen python docs/render_training_panel.py --run RUN --data DATA \\
        [-o docs/images/training_panel.png]
    python docs/render_training_panel.py --icon SpineSegTraining/Resources/Icons/SpineSegTraining.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from spineseg.moduleslogic import dataset_check, results_table, run_folder, run_monitor

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "SpineSegTraining" / "Resources" / "UI" / "SpineSegTraining.ui"


def _save_atomic(write, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".png", delete=False) as tmp:
        name = tmp.name
    try:
        write(name)
        os.replace(name, out)
    finally:
        if os.path.exists(name):
            os.unlink(name)


def render_icon(out: Path) -> None:
    """128x128 icon: three vertebrae with discs, and a rising validation curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    from spineseg.labels import DISC, VERTEBRA

    fig = Figure(figsize=(1.28, 1.28), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    rgb = lambda c: tuple(v / 255 for v in c)  # noqa: E731
    for i in range(3):
        y = 0.08 + i * 0.3
        ax.add_patch(FancyBboxPatch((0.08, y), 0.36, 0.2, boxstyle="round,pad=0.01,rounding_size=0.05",
                                    fc=rgb(VERTEBRA.color), ec="#6b5a2e", lw=1.5))
        if i < 2:
            ax.add_patch(FancyBboxPatch((0.1, y + 0.22), 0.32, 0.06, boxstyle="round,pad=0.005,rounding_size=0.03",
                                        fc=rgb(DISC.color), ec="none"))
    xs = [0.52 + 0.44 * k / 7 for k in range(8)]
    ys = [0.15 + 0.7 * (1 - 0.75 ** (k + 1)) for k in range(8)]
    ax.plot(xs, ys, color="#d0382b", lw=3, solid_capstyle="round")
    ax.plot([0.5, 0.5, 0.97], [0.95, 0.08, 0.08], color="#333333", lw=1.5)
    _save_atomic(lambda name: fig.savefig(name, dpi=100, transparent=True), out)


def _monitor_from_run(run: Path):
    """The run's recorded epochs and folds replayed through the panel's RunMonitor, then its done event."""
    info = run_folder.run_info(run)
    if info is None:
        raise SystemExit(f"render_training_panel: error: {run} is not a run folder (no config.json)")
    monitor = run_monitor.replay_run(info)
    monitor.feed({"event": "done", "run": str(run), "model": str(run_folder.find_trained_model(run) or "") or None})
    return info, monitor


def render_curves(monitor, out_png: str, width_px: int, height_px: int) -> None:
    """The module's two plot charts (loss, validation DSC), one line per training, same colour in both."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / 100, height_px / 100), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf"]
    for ax, column, title in zip(axes, ("loss", "val_dsc"), ("SpineSeg training loss", "SpineSeg validation DSC")):
        for i, series in enumerate(monitor.curves()):
            ax.plot(series.epochs, getattr(series, column), "-o", color=colors[i % len(colors)], ms=4,
                    label=series.label)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("loss" if column == "loss" else "validation DSC")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)


def build_panel(xml: str, run: Path, data: Path, info, monitor):
    from PySide6.QtCore import QBuffer, QByteArray
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import (QComboBox, QGroupBox, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                                   QPushButton, QSpinBox, QTableWidget, QTableWidgetItem)
    from PySide6.QtUiTools import QUiLoader

    buf = QBuffer()
    buf.setData(QByteArray(xml.encode()))
    panel = QUiLoader().load(buf)
    find = panel.findChild
    for box in panel.findChildren(QGroupBox):
        box.setTitle("\u25BE " + box.title())
    find(QLineEdit, "dataFolderPathLineEdit").setText(str(data))
    find(QLineEdit, "outputFolderPathLineEdit").setText(str(run))
    summary = dataset_check.summarize_dataset(data)
    find(QPlainTextEdit, "datasetSummaryTextEdit").setPlainText(summary.text())
    if info.mode == "cv":
        find(QLineEdit, "cvModelsLineEdit").setText(",".join(info.config.get("models", [])))
        find(QSpinBox, "foldsSpinBox").setValue(int(info.config.get("folds", 5)))
        base = info.config.get("base", {})
    else:
        base = info.config
    arch = find(QComboBox, "architectureComboBox")
    arch.setCurrentIndex(max(0, arch.findText(str(base.get("model", "hybrid")))))
    find(QComboBox, "presetComboBox").setCurrentIndex(0 if base.get("preset", "default") == "default" else 1)
    find(QSpinBox, "epochsSpinBox").setValue(int(base.get("epochs", 0)))
    find(QComboBox, "deviceComboBox").setCurrentIndex(1)
    log = find(QPlainTextEdit, "logTextEdit")
    for line in monitor.log:
        log.appendPlainText(line)
    find(QProgressBar, "progressBar").setValue(int(round(100 * monitor.fraction)))
    find(QLabel, "statusLabel").setText(monitor.status_text())
    find(QPushButton, "resumeButton").setEnabled(info.resumable)
    table = results_table.read_results(run)
    widget = find(QTableWidget, "resultsTableWidget")
    report = find(QLabel, "reportLabel")
    if table is not None:
        header = table.header()
        widget.setColumnCount(len(header))
        widget.setHorizontalHeaderLabels(header)
        widget.setRowCount(len(table.rows))
        for r, (row, meta) in enumerate(zip(table.text_rows(), table.rows)):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if c >= 2 and table.models[c - 2] in meta["best"]:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                widget.setItem(r, c, item)
        widget.resizeColumnsToContents()
        widget.verticalHeader().setVisible(False)
        widget.setMinimumHeight(260)
        source = table.report or table.source
        links = [f'<a href="file://{source}">{source.name}</a>']
        links += [f'<a href="file://{png}">confusion matrix ({m})</a>' for m, png in table.confusion.items()]
        report.setText("Report: " + " | ".join(links))
    find(QPushButton, "useModelButton").setEnabled(run_folder.find_trained_model(run, monitor.done) is not None)
    panel.resize(540, panel.sizeHint().height())
    return panel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a finished train or cv run folder to show")
    parser.add_argument("--data", type=Path, help="the dataset folder the run trained on")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images" / "training_panel.png")
    parser.add_argument("--icon", type=Path, help="write the module icon here instead")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.icon:
        render_icon(args.icon)
        print(args.icon)
        return 0
    if not args.run or not args.data:
        parser.error("--run and --data are required for the panel picture")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT / "docs"))
    from render_panel import standin_ui  # the SpineSeg UNet panel renderer's .ui stand-ins
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    app.setFont(QFont("DejaVu Sans", 9))
    info, monitor = _monitor_from_run(args.run)
    xml, _ = standin_ui(UI)
    panel = build_panel(xml, args.run, args.data, info, monitor)
    panel.show()
    app.processEvents()
    shot = panel.grab()
    gap, top = 20, 30
    curve_w, curve_h = 520, 620
    with tempfile.TemporaryDirectory() as tmp:
        curves_png = os.path.join(tmp, "curves.png")
        render_curves(monitor, curves_png, curve_w, curve_h)
        curves = QPixmap(curves_png)
        canvas = QPixmap(shot.width() + curve_w + 3 * gap, max(shot.height(), curve_h) + top + gap)
        canvas.fill(QColor("#e6e6e6"))
        painter = QPainter(canvas)
        painter.setFont(QFont("DejaVu Sans", 10, QFont.Bold))
        painter.drawText(gap, 4, shot.width(), top - 8, Qt.AlignLeft | Qt.AlignVCenter,
                         f"SpineSeg Training after a {info.mode} run ({args.run.name})")
        painter.drawPixmap(gap, top, shot)
        x = shot.width() + 2 * gap
        painter.drawText(x, 4, curve_w, top - 8, Qt.AlignLeft | Qt.AlignVCenter, "Plot views (Show curves: loss, then validation DSC)")
        painter.drawPixmap(x, top, curves)
        painter.end()
        _save_atomic(lambda name: canvas.save(name, "PNG") or (_ for _ in ()).throw(OSError("PNG not written")),
                     args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
