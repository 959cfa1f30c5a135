"""The cross-validation table a finished run shows: models x DSC / PPV / sensitivity per structure."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from spineseg.labels import ClassInfo
from spineseg.metrics import METRIC_LABELS
from spineseg.moduleslogic.run_folder import run_config
from spineseg.moduleslogic.values import number
from spineseg.report import ABLATION_FILES, CONFUSION_FIGURE, METRICS_JSON, REPORT_MD, ablation_rows
from spineseg.training import run_layout as layout

PathLike = Union[str, Path]


@dataclass
class ResultsTable:
    """The CV table: one row per metric and structure, one column per model, and the best model(s)."""

    models: List[str]
    rows: List[Dict[str, Any]]  # {"metric", "structure", "cells": [text per model], "best": [models]}
    source: Path
    report: Optional[Path] = None
    confusion: Dict[str, Path] = field(default_factory=dict)  # model -> its confusion_matrix.png

    def header(self) -> List[str]:
        return ["metric", "structure"] + self.models

    def text_rows(self) -> List[List[str]]:
        return [[r["metric"], r["structure"]] + list(r["cells"]) for r in self.rows]



def _cell(mean: Any, std: Any, digits: int = 3) -> str:
    m, s = number(mean), number(std)
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _find_file(run_dir: Path, name: str) -> Optional[Path]:
    """``run_dir/name``, else the shallowest match below it (the report may sit in a subfolder)."""
    direct = run_dir / name
    if direct.is_file():
        return direct
    found = sorted(run_dir.rglob(name), key=lambda p: (len(p.relative_to(run_dir).parts), str(p)))
    return found[0] if found else None


def read_results(run_dir: PathLike) -> Optional[ResultsTable]:
    """The results table of a finished run, or None when it has no report yet.

    Reads ``ablation.json`` (written by :func:`spineseg.report.write_ablation_report`)
    or, for a single model, the pooled summary of ``metrics.json``.
    """
    run = Path(run_dir)
    if not run.is_dir():
        return None
    ablation = _find_file(run, ABLATION_FILES["json"])
    if ablation is not None:
        doc = json.loads(ablation.read_text(encoding="utf-8"))
        models = [str(m) for m in doc["models"]]
        rows = [{"metric": METRIC_LABELS.get(r["metric"], r["metric"]), "structure": r["structure"],
                 "cells": [_cell(r["values"][m]["mean"], r["values"][m]["std"]) for m in models],
                 "best": list(r.get("best", []))} for r in doc["rows"]]
        report = ablation.with_name(ABLATION_FILES["md"])
        return ResultsTable(models, rows, ablation, report if report.is_file() else None,
                            _confusion_figures(run, models))
    metrics = _find_file(run, METRICS_JSON)
    if metrics is None:
        return None
    return _results_from_metrics(metrics)


def _results_from_metrics(path: Path) -> Optional[ResultsTable]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    pooled = doc.get("pooled") or doc.get("summary")
    classes = doc.get("classes")
    if not isinstance(pooled, dict) or not isinstance(classes, list):
        return None
    extra = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
    name = str(extra.get("model") or run_config(path.parent.parent).get("model") or path.parent.parent.name)
    rows = ablation_rows({name: pooled}, [ClassInfo.from_dict(c) for c in classes])
    table = [{"metric": METRIC_LABELS[r["metric"]], "structure": r["structure"],
              "cells": [_cell(r["values"][name]["mean"], r["values"][name]["std"])], "best": [name]} for r in rows]
    report = path.with_name(REPORT_MD)
    figure = path.with_name(CONFUSION_FIGURE)
    return ResultsTable([name], table, path, report if report.is_file() else None,
                        {name: figure} if figure.is_file() else {})


def _confusion_figures(run: Path, models: Sequence[str]) -> Dict[str, Path]:
    """Each cross-validated model's pooled confusion matrix (``<model>/report/confusion_matrix.png``)."""
    figures = {m: layout.model_report_dir(run, m) / CONFUSION_FIGURE for m in models}
    return {m: p for m, p in figures.items() if p.is_file()}
