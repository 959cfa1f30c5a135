"""SpineSeg Training: retrain and cross-validate SpineSeg networks from a panel.

Thin Slicer layer over the ``spineseg`` core: training runs in a separate Python
process (``python -m spineseg train|cv ... --json``, or torchrun for several GPUs)
polled by a QTimer, so the GUI stays alive and Cancel can kill the process tree.
Command-line building, event parsing, curves, the results table and run discovery
live in ``spineseg.moduleslogic`` (tested with pytest outside Slicer); this file
only wires them to widgets, a plot chart node and the application settings.

Runs on Slicer 5.8 (Python 3.9) and later: no ``X | Y`` types, no ``match``.
"""
import enum
import logging
import os
import pathlib
from typing import Annotated, Any, Dict, List, Optional

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

try:  # installed extension: the core package sits next to this script
    import spineseg  # noqa: F401
except ImportError:  # source checkout (module added with --additional-module-paths): the repository root
    import sys

    _repositoryRoot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(_repositoryRoot, "spineseg")):
        sys.path.insert(0, _repositoryRoot)

from spineseg.errors import EXIT_INPUT  # noqa: E402  (the core: pure Python, no torch import)
from spineseg.moduleslogic import (  # noqa: E402
    dataset_check,
    model_registry,
    process,
    requirements,
    results_table,
    run_folder,
    run_monitor,
    training_command,
)
from spineseg.networks import network_names  # noqa: E402

#: one chart per quantity (their scales differ: a loss of ~2 would flatten a DSC of ~0.8)
CHART_NAMES = {"loss": "SpineSeg training loss", "val_dsc": "SpineSeg validation DSC"}
CURVES_ATTRIBUTE = "SpineSegTraining.Curves"  # marks the table / series / chart nodes this module made


#
# SpineSegTraining
#


class SpineSegTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SpineSeg Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineSeg team"]
        self.parent.helpText = _("""
Trains or cross-validates SpineSeg networks on a folder of &lt;case&gt;_image / &lt;case&gt;_label pairs.
Choose the dataset, architecture, preset, epochs, folds, device and output folder, then click
<b>Train</b> or <b>Cross-validate</b>. Training runs in a separate process: the log, progress bar
and loss / validation-DSC curves update live, <b>Cancel</b> stops it and <b>Resume</b> continues
from the last checkpoint. <b>Use this model</b> adds the trained model to SpineSeg UNet.
See the <a href="https://github.com/spineseg/SpineSeg/blob/main/SpineSegTraining/README.md">module documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Developed by the SpineSeg team. The SPIDER lumbar spine MR data set (CC BY 4.0;
van der Graaf et al., Scientific Data 2024) was used to develop and test the training recipes.
""")


#
# Parameter node
#


class Preset(enum.Enum):
    DEFAULT = "default"
    PAPER = "paper"

    def label(self) -> str:
        return {"default": _("Default (Dice + CE, multi-class)"), "paper": _("Paper recipe")}[self.value]


class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:
        return {"auto": _("Auto"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


ARCHITECTURES = list(network_names())


@parameterNodeWrapper
class SpineSegTrainingParameterNode:
    """
    dataFolder - folder of <case>_image / <case>_label pairs.
    architecture - network to train; cvModels - comma-separated networks to compare in cross-validation.
    preset, epochs (0: the preset's), folds, binary - the training recipe.
    device, gpus - where it runs (several GPU indices: torchrun).
    outputFolder - the run folder.
    """

    dataFolder: pathlib.Path
    architecture: Annotated[str, Choice(ARCHITECTURES)] = "hybrid"
    cvModels: str = ""
    preset: Preset = Preset.DEFAULT
    epochs: Annotated[int, WithinRange(0, 100000)] = 0
    folds: Annotated[int, WithinRange(2, 20)] = 5
    binary: bool = False
    device: Device = Device.AUTO
    gpus: str = ""
    outputFolder: pathlib.Path


def _pathText(path) -> str:
    text = str(path) if path is not None else ""
    return "" if text in ("", ".") else text


#
# SpineSegTrainingWidget
#


class SpineSegTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # TrainingRun while a run is in progress
        self._timer = None
        self._datasetCheck = None  # check_dataset generator while a check runs
        self._shownChart = None  # "loss" or "val_dsc": the chart Show curves put in the layout
        self._resultsFolder = None  # the output folder whose results the panel shows
        self._model = None  # the trained model "Use this model" registers

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineSegTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SpineSegTrainingLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.checkDatasetButton.connect("clicked(bool)", self.onCheckDataset)
        self.ui.trainButton.connect("clicked(bool)", lambda: self.onStart("train"))
        self.ui.cvButton.connect("clicked(bool)", lambda: self.onStart("cv"))
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.showCurvesButton.connect("clicked(bool)", self.onShowCurves)
        self.ui.useModelButton.connect("clicked(bool)", self.onUseModel)
        self._timer = qt.QTimer()
        self._timer.setInterval(250)
        self._timer.connect("timeout()", self.onPollRun)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._run is not None:
            self._run.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[SpineSegTrainingParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        running = self._run is not None
        ready = bool(self._parameterNode and _pathText(self._parameterNode.dataFolder)
                     and _pathText(self._parameterNode.outputFolder))
        for button in (self.ui.trainButton, self.ui.cvButton):
            button.enabled = ready and not running
        self.ui.trainButton.toolTip = (_("Train one model on all cases (with a validation split).") if ready
                                       else _("Choose the dataset folder and the output folder."))
        self.ui.cancelButton.enabled = running
        resumable = None
        if not running and self._parameterNode and _pathText(self._parameterNode.outputFolder):
            resumable = run_folder.find_resumable_run(_pathText(self._parameterNode.outputFolder))
        self.ui.resumeButton.enabled = resumable is not None
        outputFolder = _pathText(self._parameterNode.outputFolder) if self._parameterNode else ""
        if not running and outputFolder != self._resultsFolder:  # another folder: show its results, if any
            self.showResults(outputFolder)
        self.ui.resumeButton.toolTip = (_("Continue {path} from {checkpoint}.").format(
            path=resumable.path, checkpoint=resumable.checkpoint.name) if resumable is not None
            else _("No unfinished run with a checkpoint in the output folder."))

    # -- dataset
    def onCheckDataset(self) -> None:
        """Check the dataset one case per timer tick (each case is read in full) so the GUI stays alive."""
        folder = _pathText(self._parameterNode.dataFolder) if self._parameterNode else ""
        self._datasetCheck = dataset_check.check_dataset(folder)
        self.ui.checkDatasetButton.enabled = False
        self.ui.datasetSummaryTextEdit.setPlainText(_("Checking {path}...").format(path=folder))
        qt.QTimer.singleShot(0, self._checkNextCase)

    def _checkNextCase(self) -> None:
        try:
            fraction, summary = next(self._datasetCheck)
        except StopIteration:
            self._datasetCheck = None
            self.ui.checkDatasetButton.enabled = True
            return
        except Exception as exc:  # an unreadable file the checks did not foresee: show it, do not hang
            self._datasetCheck = None
            self.ui.checkDatasetButton.enabled = True
            self.ui.datasetSummaryTextEdit.setPlainText(_("Dataset check failed: {reason}").format(reason=exc))
            return
        prefix = "" if fraction >= 1.0 else _("Checking: {percent}%").format(percent=int(100 * fraction)) + "\n"
        self.ui.datasetSummaryTextEdit.setPlainText(prefix + summary.text())
        qt.QTimer.singleShot(0, self._checkNextCase)

    # -- runs
    def onStart(self, mode: str, resumeRun: "Optional[run_folder.RunInfo]" = None) -> None:
        try:
            options = self.logic.trainingOptions(self._parameterNode, mode)
            if resumeRun is not None:
                options.output = str(resumeRun.path)
            elif os.path.isdir(options.output) and os.listdir(options.output):
                slicer.util.errorDisplay(_("The output folder {path} is not empty: choose a new folder, "
                                           "or click Resume to continue the run in it.").format(path=options.output))
                return
            if not self.logic.ensureDependencies(interactive=True):
                return
            self.logic.clearCurves()
            self._run = self.logic.startRun(options, resumeRun=resumeRun)
            if self._run.monitor.curves():  # a resumed run: draw the epochs done before the interruption
                self.logic.updateCurves(self._run.monitor)
        except (ValueError, OSError) as exc:
            slicer.util.errorDisplay(_("Cannot start: {reason}").format(reason=exc))
            return
        self.ui.logTextEdit.clear()
        self.ui.logTextEdit.appendPlainText(" ".join(self._run.job.argv))
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Starting...")
        self.ui.useModelButton.enabled = False
        self._timer.start()
        self._updateButtons()

    def onResume(self) -> None:
        run = run_folder.find_resumable_run(_pathText(self._parameterNode.outputFolder))
        if run is None:
            slicer.util.errorDisplay(_("No unfinished run with a checkpoint in the output folder."))
            return
        self.onStart(run.mode, resumeRun=run)

    def onCancel(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = _("Cancelling...")

    def onPollRun(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        lines = [line for line in run.poll() if line]
        for line in lines:
            self.ui.logTextEdit.appendPlainText(line)
        if lines:
            self.logic.updateCurves(run.monitor)
        self.ui.progressBar.setValue(int(round(100 * run.monitor.fraction)))
        self.ui.statusLabel.text = run.monitor.status_text()
        if not run.job.finished:
            return
        self._timer.stop()
        self._run = None
        if run.job.succeeded:
            self.ui.progressBar.setValue(100)
            self.ui.statusLabel.text = _("Finished in {minutes:.1f} min.").format(minutes=run.elapsed() / 60.0)
        elif run.job.cancelled:
            self.ui.statusLabel.text = _("Cancelled; Resume continues from the last checkpoint.")
        else:
            message = run.failure()
            self.ui.statusLabel.text = message
            for line in list(run.job.stderr_lines)[-20:]:
                self.ui.logTextEdit.appendPlainText(line)
            slicer.util.errorDisplay(message)
        self.showResults(run.options.output, run.monitor.done)
        self._updateButtons()

    # -- results
    def showResults(self, outputFolder: str, done: Optional[Dict[str, Any]] = None) -> None:
        """Fill the results table, report links and "Use this model" from a run folder."""
        self._resultsFolder = outputFolder
        table = results_table.read_results(outputFolder) if outputFolder else None
        widget = self.ui.resultsTableWidget
        widget.clear()
        if table is None:
            widget.setRowCount(0)
            widget.setColumnCount(0)
            self.ui.reportLabel.text = _("No results yet.")
        else:
            header = table.header()
            widget.setColumnCount(len(header))
            widget.setHorizontalHeaderLabels(header)
            rows = table.text_rows()
            widget.setRowCount(len(rows))
            for r, (row, info) in enumerate(zip(rows, table.rows)):
                for c, text in enumerate(row):
                    item = qt.QTableWidgetItem(text)
                    if c >= 2 and table.models[c - 2] in info["best"]:
                        font = item.font()
                        font.setBold(True)
                        item.setFont(font)
                    widget.setItem(r, c, item)
            widget.resizeColumnsToContents()
            link = '<a href="{0}">{1}</a>'
            report = table.report or table.source
            parts = [link.format(qt.QUrl.fromLocalFile(str(report)).toString(), report.name)]
            parts += [link.format(qt.QUrl.fromLocalFile(str(png)).toString(), _("confusion matrix ({model})").format(
                model=model)) for model, png in table.confusion.items()]
            self.ui.reportLabel.text = _("Report: ") + " | ".join(parts)
            self.ui.reportLabel.toolTip = str(report)
        info = run_folder.run_info(outputFolder) if outputFolder else None
        model = run_folder.find_trained_model(outputFolder, done) if outputFolder else None
        self._model = model
        self.ui.useModelButton.enabled = model is not None
        self.ui.useModelButton.toolTip = (
            _("Add {path} to the SpineSeg UNet model selector.").format(path=model) if model is not None
            else _("Cross-validation trains one model per fold for evaluation; Train on all cases to get the "
                   "model to use.") if info is not None and info.mode == "cv" else _("No trained model yet."))

    def onShowCurves(self) -> None:
        """Show the loss chart, and on the next click the validation-DSC chart (and so on)."""
        quantity = "val_dsc" if self._shownChart == "loss" else "loss"
        chart = slicer.mrmlScene.GetFirstNodeByName(CHART_NAMES[quantity])
        if chart is None or chart.GetNumberOfPlotSeriesNodes() == 0:
            slicer.util.infoDisplay(_("No curves yet: they appear after the first epoch."))
            return
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        self._shownChart = quantity
        self.ui.showCurvesButton.text = (_("Show validation DSC curves") if quantity == "loss"
                                         else _("Show loss curves"))

    def onUseModel(self) -> None:
        model = self._model
        if model is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to register the model."), waitCursor=True):
            self.logic.registerModel(model)
            slicer.util.infoDisplay(_("{path} is now offered in SpineSeg UNet's model selector.").format(path=model))


#
# A run in progress
#


class TrainingRun:
    """One background training process with its monitor (events -> log lines, curves, progress)."""

    def __init__(self, options: "training_command.TrainingOptions", job,
                 resumeRun: "Optional[run_folder.RunInfo]" = None) -> None:
        import time

        self.options = options
        self.job = job
        if resumeRun is not None:  # keep the curves of the epochs done before the interruption
            self.monitor = run_monitor.replay_run(resumeRun)
        else:
            self.monitor = run_monitor.RunMonitor(options)
        self._started = time.monotonic()

    def poll(self) -> List[str]:
        """Log lines for the events that arrived since the last call."""
        return [self.monitor.feed(event) for event in self.job.poll()]

    def cancel(self) -> None:
        self.job.cancel()

    def elapsed(self) -> float:
        import time

        return time.monotonic() - self._started

    def failure(self) -> str:
        return self.job.failure(task="Training", installer="SpineSeg Training")

    def modelDirectory(self) -> Optional[pathlib.Path]:
        return run_folder.find_trained_model(self.options.output, self.monitor.done)


#
# SpineSegTrainingLogic
#


class SpineSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Starts runs, draws their curves and registers trained models; usable without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SpineSegTrainingParameterNode(super().getParameterNode())

    @staticmethod
    def trainingOptions(parameterNode, mode: str) -> "training_command.TrainingOptions":
        """The panel's parameters as TrainingOptions (ValueError with a readable reason)."""
        models = [parameterNode.architecture]
        if mode == "cv" and parameterNode.cvModels.strip():
            models = [m.strip() for m in parameterNode.cvModels.split(",") if m.strip()]
        options = training_command.TrainingOptions(
            mode=mode,
            data=_pathText(parameterNode.dataFolder),
            output=_pathText(parameterNode.outputFolder),
            models=models,
            preset=parameterNode.preset.value,
            epochs=int(parameterNode.epochs) or None,
            folds=int(parameterNode.folds),
            binary=bool(parameterNode.binary),
            device=parameterNode.device.value,
            gpus=training_command.parse_gpu_list(parameterNode.gpus),
        )
        options.validate()
        return options

    @staticmethod
    def ensureDependencies(interactive: bool = True) -> bool:
        """Training needs PyTorch and MONAI in Slicer's Python: offer to install them (PyTorch through
        the PyTorch extension, which picks the build for the GPU)."""
        return requirements.ensure_requirements("torch", slicer.util, title=_("SpineSeg Training"),
                                                install_torch=pytorchInstaller(), interactive=interactive)

    @staticmethod
    def startRun(options: "training_command.TrainingOptions", resumeRun: "Optional[run_folder.RunInfo]" = None,
                 python: Optional[str] = None) -> TrainingRun:
        """Start ``options`` (or continue ``resumeRun`` with its original arguments) in a background process."""
        python = python or process.python_executable()
        if resumeRun is not None:
            argv = training_command.resume_command(resumeRun, options, python=python)
        else:
            argv = training_command.build_command(options, python=python)
        logging.info("SpineSeg training: %s", " ".join(argv))
        job = process.Job(argv, env=training_command.training_environment(options)).start()
        return TrainingRun(options, job, resumeRun)

    def runBlocking(self, options: "training_command.TrainingOptions", timeout: Optional[float] = None) -> TrainingRun:
        """Run to the end, keeping the GUI responsive (tests, scripts)."""
        import time

        run = self.startRun(options)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not run.job.finished:
            for line in run.poll():
                logging.info(line)
            slicer.app.processEvents()
            if deadline is not None and time.monotonic() > deadline:
                run.cancel()
                raise TimeoutError("training did not finish within {0} s".format(timeout))
            time.sleep(0.1)
        run.poll()
        self.updateCurves(run.monitor)
        return run

    @staticmethod
    def clearCurves() -> None:
        """Remove the curve nodes of an earlier run (a new run starts with empty charts)."""
        for className in ("vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode", "vtkMRMLTableNode"):
            for node in slicer.util.getNodesByClass(className):
                if node.GetAttribute(CURVES_ATTRIBUTE):
                    slicer.mrmlScene.RemoveNode(node)

    @staticmethod
    def _curveNode(className: str, name: str):
        node = slicer.mrmlScene.GetFirstNodeByName(name)
        if node is None or not node.GetAttribute(CURVES_ATTRIBUTE):
            node = slicer.mrmlScene.AddNewNodeByClass(className, name)
            node.SetAttribute(CURVES_ATTRIBUTE, "1")
        return node

    def updateCurves(self, monitor: "run_monitor.RunMonitor") -> Dict[str, Any]:
        """One table node per training (epoch, loss, val_dsc); a loss chart and a validation-DSC chart
        with one series per training, the same colour in both. Returns the charts by quantity."""
        import numpy as np

        charts = {}
        for column, name in CHART_NAMES.items():
            chart = slicer.mrmlScene.GetFirstNodeByName(name)
            if chart is None or not chart.GetAttribute(CURVES_ATTRIBUTE):
                chart = self._curveNode("vtkMRMLPlotChartNode", name)
                chart.SetTitle(name)
                chart.SetXAxisTitle(_("epoch"))
                chart.SetYAxisTitle(_("loss") if column == "loss" else _("validation DSC"))
            charts[column] = chart
        for series in monitor.curves():
            names, columns = series.columns()
            table = self._curveNode("vtkMRMLTableNode", "SpineSeg curves {0}".format(series.label))
            slicer.util.updateTableFromArray(table, [np.asarray(c, dtype=float) for c in columns], names)
            color = None
            for column, chart in charts.items():
                seriesName = "{0} {1}".format(series.label, "loss" if column == "loss" else "val DSC")
                plotSeries = slicer.mrmlScene.GetFirstNodeByName(seriesName)
                if plotSeries is not None and plotSeries.GetAttribute(CURVES_ATTRIBUTE):
                    color = plotSeries.GetColor()
                    continue
                plotSeries = self._curveNode("vtkMRMLPlotSeriesNode", seriesName)
                plotSeries.SetAndObserveTableNodeID(table.GetID())
                plotSeries.SetXColumnName("epoch")
                plotSeries.SetYColumnName(column)
                plotSeries.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
                plotSeries.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
                if color is None:
                    plotSeries.SetUniqueColor()
                    color = plotSeries.GetColor()
                else:
                    plotSeries.SetColor(color)
                chart.AddAndObservePlotSeriesNodeID(plotSeries.GetID())
        return charts

    @staticmethod
    def registerModel(modelDir) -> List[str]:
        """Add ``modelDir`` to the ``SpineSeg/UserModels`` setting that SpineSeg UNet's model selector reads."""
        settings = slicer.app.userSettings()
        models = model_registry.add_user_model(settings.value(model_registry.USER_MODELS_KEY), modelDir)
        settings.setValue(model_registry.USER_MODELS_KEY, models)
        settings.sync()
        return models


def pytorchInstaller():
    """The PyTorch extension's torch installer (it picks the build for the GPU), or None without that extension."""
    if not hasattr(slicer.modules, "pytorchutils"):
        return None
    import PyTorchUtils

    return lambda version: PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=version) is not None


#
# SpineSegTrainingTest
#


class SpineSegTrainingTest(ScriptedLoadableModuleTest):
    """Trains one epoch on a small phantom dataset in a background process and checks the outputs."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BadDatasetFailsWithExitCode2()
        self.setUp()
        self.test_TrainOneEpochOnPhantoms()

    def _phantomDataset(self, folder: str, count: int = 3) -> None:
        import SimpleITK as sitk

        from spineseg.phantom import make_phantom

        for i in range(count):
            phantom = make_phantom(size=(128, 128, 12), spacing=(1.38, 1.38, 4.4), seed=i)
            sitk.WriteImage(phantom.image, os.path.join(folder, "phantom{0}_image.nii.gz".format(i)))
            sitk.WriteImage(phantom.label, os.path.join(folder, "phantom{0}_label.nii.gz".format(i)))

    def test_BadDatasetFailsWithExitCode2(self):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, "empty")
            os.makedirs(empty)
            out = os.path.join(tmp, "run")
            options = training_command.TrainingOptions(mode="train", data=empty, output=out, epochs=1, device="cpu")
            run = SpineSegTrainingLogic().runBlocking(options, timeout=300)
            self.assertEqual(run.job.returncode, EXIT_INPUT, list(run.job.stderr_lines))
            self.assertIsNone(run.modelDirectory())
        self.delayDisplay("Bad dataset test passed")

    def test_TrainOneEpochOnPhantoms(self):
        import json
        import tempfile

        if not SpineSegTrainingLogic.ensureDependencies(interactive=False):
            self.skipTest("PyTorch and MONAI are not installed in this Slicer")
        self.delayDisplay("Training one epoch on phantoms")
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "data")
            os.makedirs(data)
            self._phantomDataset(data)
            summary = dataset_check.summarize_dataset(data)
            self.assertTrue(summary.ok, summary.text())
            self.assertEqual(summary.classes, [1, 2, 3])

            out = os.path.join(tmp, "run")
            options = training_command.TrainingOptions(
                mode="train", data=data, output=out, models=["hybrid"], epochs=1, batch=2, device="cpu",
                extra_args=["--window", "12", "64", "64", "--windows-per-case", "2", "--no-n4", "--workers", "0",
                            "--hparam", "width=4"])  # small and fast: this checks the plumbing, not the network
            logic = SpineSegTrainingLogic()
            run = logic.runBlocking(options, timeout=1800)
            self.assertTrue(run.job.succeeded, run.failure())
            self.assertEqual(run.monitor.fraction, 1.0)

            # curves: one training with one epoch, drawn in the chart
            curves = run.monitor.curves()
            self.assertEqual(len(curves), 1)
            self.assertEqual(curves[0].epochs, [1])
            for name in CHART_NAMES.values():
                chart = slicer.mrmlScene.GetFirstNodeByName(name)
                self.assertIsNotNone(chart, name)
                self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 1, name)
            table = chart.GetNthPlotSeriesNode(0).GetTableNode()
            self.assertEqual(list(slicer.util.arrayFromTableColumn(table, "epoch")), [1.0])

            # run folder and model
            for name in ("config.json", "split.json", "environment.json"):
                self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
            model = run.modelDirectory()
            self.assertIsNotNone(model)
            with open(os.path.join(str(model), "model.json"), encoding="utf-8") as f:
                header = json.load(f)
            self.assertEqual(header["architecture"]["name"], "hybrid")
            self.assertTrue(os.path.isfile(os.path.join(str(model), header["weights"]["file"])))

            # Use this model: registered once, however often it is clicked
            settings = slicer.app.userSettings()
            saved = settings.value(model_registry.USER_MODELS_KEY)
            try:
                logic.registerModel(model)
                models = logic.registerModel(model)
                self.assertEqual(models.count(str(pathlib.Path(model).resolve())), 1)
            finally:
                if saved is None:
                    settings.remove(model_registry.USER_MODELS_KEY)
                else:
                    settings.setValue(model_registry.USER_MODELS_KEY, saved)
        self.delayDisplay("Training test passed")
