"""One training run from a data folder to a model directory, with everything needed to repeat it.

A run folder holds ``config.json`` (the resolved :class:`TrainConfig`), ``split.json`` (which
cases trained and which validated), ``environment.json`` (versions, GPUs), ``log.jsonl`` (one
line per epoch), ``checkpoints/last.pt``, ``model/`` (the trained model, a
:mod:`spineseg.modelfile` directory) and ``validation/`` (the evaluation report of the
validation cases).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from spineseg.errors import InputError
from spineseg.inference.backends import ModelInfo
from spineseg.io import json_text, write_bytes_atomic, write_json
from spineseg.labels import SPINE, SPINE_CLASSES, ClassInfo
from spineseg.modelfile import ArchitectureSpec, ModelHeader, save_model
from spineseg.training import run_layout as layout
from spineseg.training.data import CachedCase, cache_cases, find_cases, validate_cases
from spineseg.training.init_weights import check_no_leak
from spineseg.training.presets import TrainConfig, resume_changes, thick_k
from spineseg.training.trainer import environment_info, init_distributed, train

EventFn = Callable[..., None]  # event(name, **fields)


def model_classes(config: TrainConfig) -> List[ClassInfo]:
    """The classes the model predicts: ``spine`` for binary models, else the configured or default ones."""
    if config.binary:
        return [SPINE]
    if config.classes:
        return [ClassInfo.from_dict(c) for c in config.classes]
    return list(SPINE_CLASSES)


def data_values(config: TrainConfig) -> List[int]:
    """Label values allowed in the data: the configured classes, else SpineSeg's vertebra/disc/canal."""
    if config.classes:
        return [int(c["value"]) for c in config.classes]
    return [c.value for c in SPINE_CLASSES]


def resumed_config(run: Path) -> Dict[str, Any]:
    """The ``config.json`` of a run (train or cv) that ``--resume`` continues; InputError when it is
    missing, unreadable or not a JSON object."""
    cfg = run / layout.CONFIG
    if not cfg.is_file():
        raise InputError(f"{run}: nothing to resume (no config.json); start the run without --resume")
    try:
        old = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{cfg}: damaged ({type(exc).__name__}); the run cannot be resumed: "
                         "start a new run folder") from None
    if not isinstance(old, dict):
        raise InputError(f"{cfg}: not a run configuration; the run cannot be resumed: start a new run folder")
    return old


def check_run_folder(run: Path, config: TrainConfig, *, resume: bool, overwrite: bool = False) -> None:
    """A new run needs an empty (or absent) folder; ``--resume`` needs one with the same configuration."""
    if resume:
        old = resumed_config(run)
        diff, _ = resume_changes(old, config.to_dict())  # the notes: when the checkpoint is resumed
        if diff:
            raise InputError(f"{run}: --resume with different settings ({', '.join(diff)}) than the run was started "
                             "with; repeat the original options or start a new run folder")
        ckpt = run / "checkpoints" / "last.pt"
        if ckpt.is_file():  # a damaged checkpoint is refused before anything in the run folder is rewritten
            from spineseg.training.trainer import load_checkpoint

            load_checkpoint(ckpt)
        return
    if layout.has_results(run) and not overwrite:
        raise InputError(f"{run}: run folder is not empty; pass --resume to continue it or choose a new folder")


#: ``--inplane-mm`` may resample the data in-plane at most this much finer per axis: a finer grid only
#: invents detail and multiplies memory (an absurd value would exhaust it before the first epoch)
MAX_INPLANE_UPSAMPLE = 4.0


def check_inplane(summary: Dict[str, Any], inplane_mm: Optional[float]) -> None:
    """Refuse an ``--inplane-mm`` far finer than the data, before anything is cached."""
    if inplane_mm is None:
        return
    for cid, case in summary["cases"].items():
        finest = min(float(v) for v in case["spacing"])
        if finest / float(inplane_mm) > MAX_INPLANE_UPSAMPLE:
            raise InputError(f"--inplane-mm {inplane_mm:g}: case {cid} has {finest:g} mm voxels; resampling more "
                             f"than {MAX_INPLANE_UPSAMPLE:g}x finer invents detail and multiplies memory: "
                             f"use {finest / MAX_INPLANE_UPSAMPLE:.3g} mm or more")


def prepare_data(data: os.PathLike, config: TrainConfig, cache_dir: Path, *, progress=None, cancel=None
                 ) -> Dict[str, Any]:
    """Find, check and cache every case; returns {"cases": {id: CachedCase}, "summary": ...}."""
    cases = find_cases(data)
    summary = validate_cases(cases, data_values(config))
    check_inplane(summary, config.inplane_mm)
    cached = cache_cases(cases, config.preprocessing, cache_dir, data_values(config), progress=progress, cancel=cancel,
                         inplane_mm=config.inplane_mm)
    summary["source"] = str(Path(data).resolve())
    return {"cases": cached, "summary": summary, "list": cases}


def prepare_data_once(data: os.PathLike, config: TrainConfig, cache_dir: Path, *, device: str = "auto",
                      progress=None, cancel=None) -> Dict[str, Any]:
    """:func:`prepare_data` under torchrun: rank 0 checks and caches, the other ranks wait, then read the cache."""
    dist_info = init_distributed(device)
    if dist_info.world > 1 and not dist_info.main:
        dist_info.barrier()
        return prepare_data(data, config, cache_dir)
    prepared = prepare_data(data, config, cache_dir, progress=progress, cancel=cancel)
    dist_info.barrier()
    return prepared


def model_spacing(cases: Sequence[CachedCase], config: TrainConfig) -> List[float]:
    """Median canonical spacing of the training cases, after thick-slice simulation."""
    import numpy as np

    rows = [[c.spacing[0] * thick_k(config, c.spacing[0]), c.spacing[1], c.spacing[2]] for c in cases]
    return [float(v) for v in np.median(np.asarray(rows, dtype=float), axis=0)]


def slice_range(cases: Sequence[CachedCase], config: TrainConfig) -> Optional[List[float]]:
    """[thin, thick] median slice spacing (mm) a mixed thin/thick model saw; None for a single thickness."""
    import numpy as np

    if not 0.0 < float(config.thick_prob) < 1.0:
        return None
    thin = float(np.median([c.spacing[0] for c in cases]))
    thick = float(np.median([c.spacing[0] * _thickest_k(config, c.spacing[0]) for c in cases]))
    return [thin, thick] if thick > thin else None


def _thickest_k(config: TrainConfig, slice_mm: float) -> int:
    """The most thin slices a training window averages: the scan augmentation draws up to 6 mm."""
    k = thick_k(config, slice_mm)
    if k > 1 and config.scan_aug:
        from spineseg.training.augment import THICK_MM

        return max(2, int(round(THICK_MM[1] / float(slice_mm))))
    return k


def build_header(config: TrainConfig, classes: Sequence[ClassInfo], network, *, name: str,
                 spacing: Sequence[float], training: Dict[str, Any], metrics: Dict[str, Any]) -> ModelHeader:
    """The trained model's header (save_model fills in the weights); ``network`` None: the one it will have."""
    spec = getattr(network, "spec", None) or {"name": config.model, "in_channels": 1,
                                              "out_channels": config.out_channels, "hparams": config.hparams}
    header = ModelHeader(
        name=name, architecture=ArchitectureSpec.from_dict(spec), task="binary" if config.binary else "multiclass",
        classes=list(classes), spacing=tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        window=tuple(int(v) for v in config.window),  # type: ignore[arg-type]
        preprocessing=dict(config.preprocessing), training=training, metrics=metrics)
    header.validate(f"model {name}")
    return header


def save_trained_model(path: Path, network, header: ModelHeader, *, overwrite: bool = False) -> Path:
    """Write the model directory (weights on the CPU)."""
    return save_model(path, network.to("cpu").eval(), header, overwrite=overwrite)


def _finite(value: Any) -> Optional[float]:
    """NaN (an undefined metric) -> None, so model.json stays strict JSON."""
    v = float(value)
    return v if v == v and abs(v) != float("inf") else None


def summarise_metrics(pooled: Dict[str, Any]) -> Dict[str, Any]:
    """The compact validation summary stored in a model header (means over cases; null = undefined)."""
    out: Dict[str, Any] = {"n_cases": pooled["n_cases"], "mean_dsc": _finite(pooled["mean_dsc"])}
    for name, s in pooled["classes"].items():
        out[name] = {m: _finite(s["mean"][m]) for m in ("dsc", "ppv", "sensitivity")}
    out["spine"] = {m: _finite(pooled["union"]["mean"][m]) for m in ("dsc", "ppv", "sensitivity")}
    return out


def append_epoch(log: Path, record: Dict[str, Any]) -> None:
    """Add one epoch to ``log.jsonl``, rewritten atomically: a full disk leaves the old log, and the
    lines of epochs a killed or failed run recorded but did not checkpoint (redone on --resume) and any
    line a kill cut short are dropped, so the log always matches the checkpoint's history."""
    kept = []
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                earlier = json.loads(line)
            except ValueError:
                continue
            epoch = earlier.get("epoch") if isinstance(earlier, dict) else None
            if isinstance(epoch, int) and epoch < record["epoch"]:
                kept.append(line)
    kept.append(json_text(record, indent=None))
    write_bytes_atomic(("\n".join(kept) + "\n").encode("utf-8"), log, overwrite=True)


def run_training(config: TrainConfig, cases: Dict[str, CachedCase], train_ids: Sequence[str],
                 val_ids: Sequence[str], run_dir: os.PathLike, *, data_summary: Dict[str, Any],
                 device: str = "auto", resume: bool = False, event: Optional[EventFn] = None,
                 cancel=None, progress=None, command: Optional[List[str]] = None, name: Optional[str] = None,
                 fold: Optional[int] = None, write_report: bool = True) -> Dict[str, Any]:
    """Train on ``train_ids``, validate on ``val_ids``, write the run folder; returns a summary.

    Only rank 0 writes files. The summary holds the model path, the history and the per-case
    validation metrics (``val_cases``) plus overlay arrays (``overlays``) for reports.
    """
    run = Path(run_dir)
    rank = int(os.environ.get("RANK", "0"))
    main = rank == 0
    classes = model_classes(config)
    if config.init_weights:
        check_no_leak(config.init_weights, val_ids)  # before anything is written
    if main:
        run.mkdir(parents=True, exist_ok=True)
        write_json(config.to_dict(), run / layout.CONFIG, overwrite=True)
        write_json({"seed": config.seed, "fold": fold, "train": sorted(train_ids),
                                        "validation": sorted(val_ids)}, run / layout.SPLIT, overwrite=True)
        write_json({**environment_info(), "command": command or sys.argv}, run / layout.ENVIRONMENT, overwrite=True)
    log_path = run / layout.LOG

    def on_epoch(record: Dict[str, Any]) -> None:
        append_epoch(log_path, record)
        if event is not None:
            event("epoch", **({"fold": fold} if fold is not None else {}), **({"model": config.model}),
                  **{k: record[k] for k in ("epoch", "epochs", "loss", "val_dsc", "lr", "windows_per_s", "eta_s")})

    name = name or f"spineseg-{config.model}"
    spacing = model_spacing([cases[c] for c in train_ids], config)
    mixed = slice_range([cases[c] for c in train_ids], config)
    validator = None
    if val_ids:
        from spineseg.training.validation import Validator

        # the header the saved model will have: validation runs the network as that model would run
        early = build_header(config, classes, None, name=name, spacing=spacing, metrics={},
                             training={"slice_mm_range": mixed} if mixed else {})
        validator = Validator({c: cases[c].source() for c in val_ids}, config, ModelInfo(run / layout.MODEL, early))
    result = train(config, {c: cases[c] for c in train_ids}, validator, run, classes,
                   device=device, resume=resume, on_epoch=on_epoch, cancel=cancel, progress=progress)
    out: Dict[str, Any] = {"history": result.history, "run": str(run), "model": None, "val_cases": {},
                           "overlays": {}}
    if not main:
        return out
    import torch

    dev = next(result.network.parameters()).device
    keep: Dict[str, Any] = dict(result.overlays)
    val_cases = result.val_cases  # the validation after the last epoch, when this call ran it
    if validator is not None and set(val_cases) != set(val_ids):
        keep = {}
        val_cases = validator(result.network, dev, keep=keep)
    metrics: Dict[str, Any] = {}
    if val_cases:
        from spineseg.metrics import pool_metrics

        metrics = {"validation": summarise_metrics(pool_metrics(val_cases, classes))}
    training = {"preset": config.preset, "epochs": config.epochs, "windows": result.windows,
                "seconds": round(result.seconds, 1), "train_cases": sorted(train_ids),
                "validation_cases": sorted(val_ids), "data": {"n_cases": data_summary.get("n_cases"),
                                                              "source": data_summary.get("source")},
                "config": config.to_dict(), "command": command or sys.argv, "fold": fold,
                "torch": torch.__version__}
    if mixed:
        training["slice_mm_range"] = mixed  # the inference spacing check accepts this whole range
    header = build_header(config, classes, result.network, name=name, spacing=spacing, training=training,
                          metrics=metrics)
    model_dir = save_trained_model(run / layout.MODEL, result.network, header, overwrite=resume)
    if val_cases and write_report:
        from spineseg.report import write_evaluation_report

        write_evaluation_report(run / layout.VALIDATION, val_cases, classes,
                                curves={str(fold if fold is not None else 0): result.history},
                                overlays=lambda cid: keep[cid], title=f"Validation: {config.model}",
                                overwrite=True)
    out.update(model=str(model_dir), val_cases=val_cases, overlays=keep, seconds=result.seconds,
               windows=result.windows)
    return out
