"""The ``spineseg train|cv ... --json`` command line that SpineSeg Training runs.

Several GPUs run ``torchrun --nproc_per_node N -m spineseg train ...``, spelled
``python -m torch.distributed.run`` (the module behind the ``torchrun`` script),
because Slicer's Python has no ``torchrun`` on its PATH.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from spineseg.inference.backends import DEVICES
from spineseg.moduleslogic.process import child_environment
from spineseg.moduleslogic.run_folder import RunInfo
from spineseg.networks import ABLATION_SET, network_names
from spineseg.training.presets import PRESETS

MODES = ("train", "cv")


@dataclass
class TrainingOptions:
    """The panel's choices. ``None`` leaves a value to the CLI (and so to the preset)."""

    mode: str = "train"  # one of MODES
    data: str = ""
    output: str = ""
    models: List[str] = field(default_factory=lambda: ["hybrid"])  # train uses models[0]
    preset: str = "default"
    epochs: Optional[int] = None
    folds: int = 5  # cv only
    batch: Optional[int] = None
    seed: Optional[int] = None
    binary: bool = False
    device: str = "auto"  # one of DEVICES (with gpus)
    gpus: List[int] = field(default_factory=list)  # CUDA indices; several -> torchrun (train)
    resume: bool = False
    extra_args: List[str] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError with a sentence the panel can show."""
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: use train or cv")
        if not str(self.data).strip():
            raise ValueError("choose the dataset folder")
        if not str(self.output).strip():
            raise ValueError("choose the output (run) folder")
        if not self.models or any(not m for m in self.models):
            raise ValueError("choose an architecture")
        known = set(network_names())
        unknown = [m for m in self.models if m not in known]
        if unknown:
            raise ValueError(f"unknown architecture {unknown[0]!r}; choose one of {', '.join(sorted(known))}")
        if self.mode == "train" and len(self.models) != 1:
            raise ValueError("training takes one architecture; cross-validate to compare several")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}: use {' or '.join(PRESETS)}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise ValueError(f"epochs {self.epochs}: use 1 or more")
        if self.mode == "cv" and int(self.folds) < 2:
            raise ValueError(f"folds {self.folds}: cross-validation needs 2 or more")
        if self.batch is not None and int(self.batch) < 1:
            raise ValueError(f"batch {self.batch}: use 1 or more")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r}: use {', '.join(DEVICES)}")
        if any(int(g) < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"GPU indices {self.gpus}: use distinct indices >= 0")
        if self.gpus and self.device == "cpu":
            raise ValueError("GPU indices were chosen with device cpu; choose device cuda or auto")
        if len(self.gpus) > 1 and self.mode == "cv":
            raise ValueError("cross-validation runs on one GPU; choose one GPU index (or train on several)")

    @property
    def distributed(self) -> bool:
        return len(self.gpus) > 1

    def device_arg(self) -> str:
        if self.distributed:
            return "cuda"  # torchrun gives each process its LOCAL_RANK; CUDA_VISIBLE_DEVICES picks the GPUs
        if len(self.gpus) == 1:
            return f"cuda:{int(self.gpus[0])}"
        return self.device


def spineseg_prefix(python: Optional[str] = None, *, processes: int = 1) -> List[str]:
    """``[python, -m, spineseg]``, or the torchrun form of it for ``processes`` > 1."""
    py = python or sys.executable
    if processes > 1:
        return [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "spineseg"]
    return [py, "-m", "spineseg"]


def build_command(options: TrainingOptions, *, python: Optional[str] = None,
                  prefix: Optional[Sequence[str]] = None) -> List[str]:
    """The argv that runs ``options``; ``--json`` last so the panel can read the events.

    ``prefix`` replaces ``[python, "-m", "spineseg"]`` (tests use a stand-in program).
    """
    options.validate()
    if prefix is not None:
        argv = [str(a) for a in prefix]
    else:
        argv = spineseg_prefix(python, processes=len(options.gpus) if options.distributed else 1)
    argv += [options.mode, str(options.data), "-o", str(options.output)]
    if options.mode == "train":
        argv += ["--model", options.models[0]]
    else:
        argv += ["--models", ",".join(options.models), "--folds", str(int(options.folds))]
    argv += ["--preset", options.preset]
    if options.epochs is not None:
        argv += ["--epochs", str(int(options.epochs))]
    if options.batch is not None:
        argv += ["--batch", str(int(options.batch))]
    if options.seed is not None:
        argv += ["--seed", str(int(options.seed))]
    if options.binary:
        argv.append("--binary")
    argv += ["--device", options.device_arg()]
    if options.resume:
        argv.append("--resume")
    argv += [str(a) for a in options.extra_args]
    argv.append("--json")
    return argv


def training_environment(options: TrainingOptions, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of the run: the package on PYTHONPATH (:func:`.process.child_environment`)
    and, with several GPUs, ``CUDA_VISIBLE_DEVICES`` limited to them."""
    env = child_environment(dict(os.environ if base is None else base))
    if options.distributed:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(g)) for g in options.gpus)
    return env


def parse_gpu_list(text: str) -> List[int]:
    """"0,1" or "0 1" -> [0, 1]; "" -> []. ValueError names the bad item."""
    out: List[int] = []
    for item in text.replace(",", " ").split():
        if not item.isdigit():
            raise ValueError(f"GPU index {item!r}: use numbers such as 0,1")
        out.append(int(item))
    return out


def resume_command(run: RunInfo, options: TrainingOptions, *, python: Optional[str] = None) -> List[str]:
    """The command that continues ``run``: its original arguments plus ``--resume`` and ``--json``.

    The CLI refuses a resume whose settings differ from the run's, so the panel's
    current choices are not used, except ``options.gpus`` (one process or torchrun):
    the hardware may change between sessions. Without a recorded command, the
    panel's options are used with ``--resume`` (the CLI then says what differs).
    """
    if not run.command:
        resumed = TrainingOptions(**{**options.__dict__, "mode": run.mode, "output": str(run.path), "resume": True})
        return build_command(resumed, python=python)
    args = [a for a in run.command if a not in ("--resume", "--json")]
    processes = len(options.gpus) if options.distributed and run.mode == "train" else 1
    return spineseg_prefix(python, processes=processes) + args + ["--resume", "--json"]


def options_of_run(run: RunInfo) -> TrainingOptions:
    """The TrainingOptions a run folder was made with, as far as the monitor needs them (mode, models, folds)."""
    if run.mode == "cv":
        return TrainingOptions(mode="cv", data="-", output=str(run.path),
                               models=[str(m) for m in run.config.get("models") or []] or ["hybrid"],
                               folds=int(run.config.get("folds") or 2))
    return TrainingOptions(mode="train", data="-", output=str(run.path),
                           models=[str(run.config.get("model") or "hybrid")])


def options_of_command(args: Sequence[str]) -> Optional[TrainingOptions]:
    """How many trainings a ``cv`` command line holds (models x folds), as TrainingOptions for the
    monitor; None for ``train`` (one training)."""
    if not args or args[0] != "cv":
        return None
    models = _arg_value(args, "--models", ",".join(ABLATION_SET)).split(",")
    folds = _arg_value(args, "--folds", "5")
    return TrainingOptions(mode="cv", models=[m for m in models if m] or ["hybrid"],
                           folds=int(folds) if folds.isdigit() else 5)


def _arg_value(args: Sequence[str], flag: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return str(args[i + 1])
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return default
