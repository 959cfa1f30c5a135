"""Training recipes: ``paper`` (the design report's recipe, exactly) and ``default`` (what works better).

A :class:`TrainConfig` is the whole resolved configuration of a run; it is written to
``config.json`` so the run can be repeated from its folder. Importing this module does not
import torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from spineseg.errors import InputError
from spineseg.inference.sliding import DEFAULT_OVERLAP
from spineseg.io import SPACING_RANGE_MM
from spineseg.modelfile import MAX_WINDOW

PRESETS = ("paper", "default")
LOSSES = ("mse", "dicece")
SCHEDULES = ("step", "cosine", "poly")
#: settings a ``--resume`` may change, and why that is safe: they do not change the weights a run trains
#: (the validation overlap follows ``spineseg segment``; run folders written before it was 0.5 hold 0.25
#: or no value). The resumed run uses the value given now.
RESUME_MAY_CHANGE = {
    "workers": "it changes data loading only",
    "val_overlap": "it changes validation scoring only; the earlier epochs' val_dsc in log.jsonl keep the old value",
}
#: with a time budget: share of the budget spent warming up (when the preset warms up at all)
BUDGET_WARMUP_FRACTION = 0.05
#: with a time budget and no --epochs: the epoch cap, high enough that the clock always stops the run first
BUDGET_EPOCH_CAP = 100000


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (plus device/worker settings that do not)."""

    preset: str = "default"
    model: str = "hybrid"
    hparams: Dict[str, Any] = field(default_factory=dict)
    binary: bool = False
    classes: List[Dict[str, Any]] = field(default_factory=list)  # ClassInfo dicts; empty: from the task
    window: List[int] = field(default_factory=lambda: [12, 128, 128])  # D, H, W
    epochs: int = 200
    time_budget_min: Optional[float] = None  # stop on wall time (minutes); the lr schedule spans the budget
    batch: int = 8
    cases_per_epoch: float = 1.0  # fraction of the training cases drawn each epoch
    windows_per_case: int = 16
    loss: str = "dicece"
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_every: int = 10  # schedule "step": multiply the lr by step_gamma every step_every epochs
    step_gamma: float = 0.9
    poly_power: float = 0.9
    warmup_epochs: int = 0
    foreground_prob: float = 0.0  # share of windows centred on a random foreground voxel
    flips: bool = True
    intensity_aug: bool = False
    scan_aug: bool = False  # thick-slice and scanner realism (spineseg.training.augment): random thickness etc.
    thick_slices: int = 1  # average k consecutive slices (thick-slice simulation); 0: auto from spacing
    target_slice_mm: float = 4.4
    thick_prob: float = 1.0  # share of windows that are thick-slice simulated (when k > 1); the rest stay thin
    inplane_mm: Optional[float] = None  # train at this in-plane spacing (mm), resampled once in the cache
    amp: bool = True  # bf16 autocast when on GPU (never on CPU)
    seed: int = 0
    val_every: int = 1
    val_overlap: float = DEFAULT_OVERLAP  # validation scores as 'spineseg segment' runs
    workers: int = 2
    deterministic: bool = False
    preprocessing: Dict[str, Any] = field(default_factory=dict)  # PreprocessingConfig.to_dict()
    init_weights: Optional[Dict[str, Any]] = None  # {"model": folder, "sha256": ...}: fine-tune from it (init_weights.py)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        self.window = [int(v) for v in self.window]
        if len(self.window) != 3 or min(self.window) < 1:
            raise InputError(f"window {self.window}: give three positive sizes D H W, e.g. 12 128 128")
        if any(w > m for w, m in zip(self.window, MAX_WINDOW)):
            raise InputError(f"window {self.window}: larger than {' x '.join(map(str, MAX_WINDOW))} (slices x in-plane "
                             "voxels), the most a model may declare; use a smaller --window")
        for name in ("epochs", "batch", "windows_per_case", "step_every", "val_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.time_budget_min is not None and not 0.0 < float(self.time_budget_min) < math.inf:
            raise InputError(f"--time-budget {self.time_budget_min}: use a positive number of minutes, e.g. 75")
        if not 0.0 < float(self.cases_per_epoch) <= 1.0:
            raise InputError(f"cases per epoch {self.cases_per_epoch}: use a fraction in (0, 1]")
        if not 0.0 < float(self.lr) < math.inf:
            raise InputError(f"learning rate {self.lr}: use a positive number such as 1e-3")
        if not 0.0 <= float(self.foreground_prob) <= 1.0:
            raise InputError(f"foreground probability {self.foreground_prob}: use a fraction in [0, 1]")
        if not 0.0 <= float(self.thick_prob) <= 1.0:
            raise InputError(f"thick-slice probability {self.thick_prob}: use a fraction in [0, 1]")
        lo, hi = SPACING_RANGE_MM
        if self.inplane_mm is not None and not lo <= float(self.inplane_mm) <= hi:
            raise InputError(f"--inplane-mm {self.inplane_mm}: use a spacing in mm from {lo:g} to {hi:g}, e.g. 1.2")
        if int(self.thick_slices) < 0:
            raise InputError(f"thick slices {self.thick_slices}: use 0 (auto), 1 (off) or k > 1")
        if self.loss == "mse" and not self.binary:
            raise InputError("the MSE loss (paper preset) is for binary models; add --binary or use --preset default")
        if not self.binary and not self.classes:
            from spineseg.labels import SPINE_CLASSES, classes_to_dicts

            self.classes = classes_to_dicts(SPINE_CLASSES)
        if not 0 <= int(self.seed) < 2 ** 32:
            raise InputError(f"--seed {self.seed}: use an integer from 0 to {2 ** 32 - 1}")
        if int(self.workers) < 0:
            raise InputError(f"workers {self.workers}: use 0 or more")

    @property
    def out_channels(self) -> int:
        return 1 if self.binary else 1 + len(self.classes)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"training configuration has unknown settings {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def resume_changes(old: Dict[str, Any], new: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """Compare the configuration a run was started with (``old``, from its folder) with this one.

    Returns (the settings that differ and forbid a resume, one note per changed setting of
    :data:`RESUME_MAY_CHANGE` naming the value used from now on).
    """
    new = json.loads(json.dumps(new))
    refused = sorted(k for k in set(old) | set(new) if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k))
    notes = [f"--resume uses {key} = {new.get(key)!r} (the run started with "
             f"{repr(old[key]) if key in old else 'no recorded value'}); {why}"
             for key, why in RESUME_MAY_CHANGE.items() if old.get(key) != new.get(key)]
    return refused, notes


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The resolved configuration of preset ``name`` with ``overrides`` (None values are ignored).

    ``paper``: random 128x128x12 windows, 40% of the cases per epoch, 16 windows per case,
    batch 8, MSE on the sigmoid output, Adam lr 1e-3 decayed x0.9 every 10 epochs, 200
    epochs, flips only, binary target. ``default``: Dice + cross-entropy on logits, half of
    the windows centred on foreground, intensity and scan augmentation (random slice thickness
    and profile, resolution loss, bias, contrast, inversion), thick-slice simulation for
    thin-slice data, bf16 AMP on GPU, AdamW with warm-up then cosine decay, multi-class.
    """
    if name == "paper":
        base: Dict[str, Any] = dict(
            preset="paper", window=[12, 128, 128], epochs=200, batch=8, cases_per_epoch=0.4,
            windows_per_case=16, loss="mse", optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step",
            step_every=10, step_gamma=0.9, warmup_epochs=0, foreground_prob=0.0, flips=True,
            intensity_aug=False, thick_slices=1, amp=False, binary=True)
    elif name == "default":
        base = dict(
            preset="default", window=[12, 128, 128], epochs=200, batch=8, cases_per_epoch=1.0,
            windows_per_case=8, loss="dicece", optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine",
            warmup_epochs=5, foreground_prob=0.5, flips=True, intensity_aug=True, scan_aug=True, thick_slices=0,
            amp=True, binary=False)
    else:
        raise InputError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    if base.get("loss") == "mse" and not base.get("binary"):
        raise InputError("the paper preset trains a binary model (MSE on the sigmoid output); drop --classes/"
                         "multi-class options or use --preset default")
    return TrainConfig(**base)


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based); one value per epoch.

    A pure function of the epoch, so resuming needs no scheduler object state and the
    values are testable: ``step`` gives ``gamma ** (epoch // step_every)``.
    """
    import math

    e, n = int(epoch), int(config.epochs)
    warmup = effective_warmup(config)
    if warmup and e < warmup:
        return (e + 1) / float(warmup + 1)
    if config.schedule == "step":
        return float(config.step_gamma) ** (e // int(config.step_every))
    start = warmup
    t = (e - start) / float(max(1, n - start))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** float(config.poly_power)  # poly


def budget_lr_factor(config: TrainConfig, epoch: int, fraction: float) -> float:
    """Multiplier of the base learning rate with a time budget, ``fraction`` = elapsed / budget.

    Warm-up (linear, over :data:`BUDGET_WARMUP_FRACTION` of the budget) then cosine or poly
    decay to zero at the end of the budget, so a run that stops on the clock has annealed. The
    ``step`` schedule is a per-epoch recipe (the paper's) and stays one: :func:`lr_factor`.
    """
    import math

    if config.schedule == "step":
        return lr_factor(config, epoch)
    t = min(max(float(fraction), 0.0), 1.0)
    warm = BUDGET_WARMUP_FRACTION if int(config.warmup_epochs) > 0 else 0.0
    if t < warm:
        return t / warm
    u = (t - warm) / (1.0 - warm)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * u))
    return (1.0 - u) ** float(config.poly_power)


def effective_warmup(config: TrainConfig) -> int:
    """Warm-up epochs, at most a tenth of the run (a 4-epoch test run would otherwise never leave it)."""
    return min(int(config.warmup_epochs), int(config.epochs) // 10)


def resolve_thick_slices(config: TrainConfig, slice_mm: float) -> int:
    """k for thick-slice simulation: ``thick_slices`` if set, else round(target / slice spacing) (>= 1)."""
    if int(config.thick_slices) >= 1:
        return int(config.thick_slices)
    if slice_mm <= 0:
        return 1
    return max(1, int(round(float(config.target_slice_mm) / float(slice_mm))))


def thick_k(config: TrainConfig, slice_mm: float) -> int:
    """Slices averaged per thick slice in training windows and validation: 1 when ``thick_prob`` is 0."""
    return 1 if float(config.thick_prob) <= 0.0 else resolve_thick_slices(config, slice_mm)
