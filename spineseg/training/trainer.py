"""The training loop: windows -> network -> loss -> optimiser, with checkpoints, resume, AMP and DDP.

One process per GPU under ``torchrun`` (PyTorch's DistributedDataParallel, gloo on CPU,
NCCL on GPU); a single process otherwise. Rank 0 validates, writes checkpoints, the
model and the logs; every rank gets a disjoint share of the same epoch plan through
``DistributedSampler``.

A checkpoint (``checkpoints/last.pt``, written atomically after every epoch) holds the
model, optimiser and scheduler states, the RNG states, the epoch and the history; it is
read back with ``torch.load(weights_only=True)``. Windows are a function of
(seed, epoch, index) (see :mod:`~spineseg.training.sampling`), so a run killed anywhere in
an epoch and resumed redoes that epoch exactly: on CPU the result equals an uninterrupted run.

With a time budget (``TrainConfig.time_budget_min``) the run stops on the wall clock, between
steps, and the learning rate follows :func:`~spineseg.training.presets.budget_lr_factor` of the
elapsed share of the budget, set before every step. The checkpoint carries the elapsed seconds, so
a resumed run spends only what is left (the time of an epoch lost to a kill is not charged).
"""
from __future__ import annotations

import io
import math
import os
import platform
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from spineseg.errors import Cancelled, InputError
from spineseg.io import write_bytes_atomic
from spineseg.labels import ClassInfo
from spineseg.inference.backends import resolve_torch_device
from spineseg.training.data import CachedCase
from spineseg.training.init_weights import load_init_weights
from spineseg.training import run_layout as layout
from spineseg.training.presets import TrainConfig, budget_lr_factor, lr_factor, resume_changes
from spineseg.training.sampling import WindowDataset
from spineseg.training.validation import Validator

EpochCallback = Callable[[Dict[str, Any]], None]
CHECKPOINT_FORMAT = "spineseg-checkpoint"


# ----------------------------------------------------------------------------- environment and distribution

def environment_info() -> Dict[str, Any]:
    """Versions, platform and GPUs, for ``environment.json``."""
    import torch

    import spineseg

    info: Dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                            "spineseg": getattr(spineseg, "__version__", "?"), "torch": torch.__version__,
                            "numpy": np.__version__, "cpu_count": os.cpu_count()}
    for name in ("monai", "SimpleITK"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - optional information
            info[name] = None
    info["cuda_available"] = bool(torch.cuda.is_available())
    info["cuda"] = torch.version.cuda
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    info["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    return info


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local)


# ----------------------------------------------------------------------------- pieces

def build_loss(config: TrainConfig):
    """MSE on the sigmoid output (paper) or MONAI's Dice + cross-entropy on logits (default)."""
    import torch

    if config.loss == "mse":
        mse = torch.nn.MSELoss()
        return lambda logits, target: mse(torch.sigmoid(logits), target)
    from monai.losses import DiceCELoss

    if config.binary:
        fn = DiceCELoss(sigmoid=True)
        return lambda logits, target: fn(logits, target)
    fn = DiceCELoss(to_onehot_y=True, softmax=True)
    return lambda logits, target: fn(logits, target[:, None])


def build_optimizer(config: TrainConfig, params):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.99, nesterov=True, weight_decay=config.weight_decay)
    raise InputError(f"unknown optimizer {config.optimizer!r}; use adam, adamw or sgd")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Serialised in memory, then written by the one atomic writer (a full disk: one-line error, old file kept)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(buffer.getvalue(), path, overwrite=True)


def _rng_state() -> Dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": int(random.getstate()[2] or 0),
             "numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(v) for v in state["python"]), state.get("python_pos") or None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> Dict[str, Any]:
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to fix
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise InputError(f"{path}: cannot read checkpoint ({first[:160]}); delete it to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a SpineSeg checkpoint; delete it or choose another run folder")
    return ckpt


# ----------------------------------------------------------------------------- the loop

@dataclass
class TrainResult:
    network: Any
    history: List[Dict[str, Any]]
    val_cases: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    windows: int = 0
    checkpoint: Optional[Path] = None
    overlays: Dict[str, Any] = field(default_factory=dict)


@dataclass
class _Session:
    """What one call of :func:`train` works with: the network and its optimiser, the data, the clock and
    the history so far (from the checkpoint when resumed)."""

    config: TrainConfig
    dist: Dist
    device: Any
    net: Any  # the network itself
    model: Any  # ``net``, or its DistributedDataParallel wrapper
    optimizer: Any
    scheduler: Any
    loss_fn: Callable
    dataset: WindowDataset
    checkpoint: Path
    started: float  # the budget's clock: set-up counts, data caching (before train) does not
    start_epoch: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    elapsed_before: float = 0.0  # seconds spent by earlier calls, from the checkpoint
    last_report: float = 0.0  # when progress was last reported (at most every 0.5 s, and at each epoch's end)

    @property
    def budget_s(self) -> Optional[float]:
        return float(self.config.time_budget_min) * 60.0 if self.config.time_budget_min else None

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def out_of_time(self) -> bool:
        budget = self.budget_s
        return budget is not None and _out_of_time(self.elapsed(), budget, self.dist, self.device)


@dataclass
class _Epoch:
    """One epoch's training numbers (summed over ranks)."""

    loss: float
    windows: int
    lr: float
    seconds: float
    stopped: bool  # the time budget ran out inside the epoch


def _setup(config: TrainConfig, train_cases: Dict[str, CachedCase], run: Path, classes: Sequence[ClassInfo],
           device: str, started: float) -> _Session:
    """Seeds, device, network (DDP-wrapped under torchrun), optimiser, schedule, loss and windows."""
    import torch

    from spineseg.networks import build_network

    dist_info = init_distributed(device)
    dev = resolve_torch_device(device, dist_info.local_rank if dist_info.world > 1 else None)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(int(config.seed))
    random.seed(int(config.seed))
    if not train_cases:
        raise InputError("no training cases")
    net = build_network(config.model, in_channels=1, out_channels=config.out_channels, **config.hparams).to(dev)
    model = net
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))
    return _Session(config, dist_info, dev, net, model, optimizer, scheduler, build_loss(config),
                    WindowDataset(train_cases, config, [c.value for c in classes]),
                    layout.last_checkpoint(run), started)


def _resume(session: _Session) -> None:
    """Continue from the session's checkpoint: weights, optimiser, schedule, RNG states, history, clock."""
    ckpt = load_checkpoint(session.checkpoint)
    refused, notes = resume_changes(dict(ckpt.get("config") or {}), session.config.to_dict())
    if refused:
        raise InputError(f"{session.checkpoint}: checkpoint was written with a different configuration "
                         f"({', '.join(refused)}); resume with the same options or start a new run folder")
    if session.dist.main:
        for note in notes:
            warnings.warn(note, stacklevel=2)
    session.net.load_state_dict(ckpt["model"])
    session.optimizer.load_state_dict(ckpt["optimizer"])
    session.scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"])
    session.start_epoch = int(ckpt["epoch"])
    session.history = list(ckpt["history"])
    session.windows = int(ckpt.get("windows", 0))
    session.elapsed_before = float(ckpt.get("seconds", 0.0))


def _worker_ignores_sigterm(worker_id: int) -> None:
    """A SIGTERM to the process group (a Cancel) stops the main process between steps; a loader worker
    killed by it first would turn the cancel into a crash. The workers end when the loader does."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _train_epoch(session: _Session, epoch: int, *, cancel: Optional[Callable[[], bool]],
                 progress: Optional[Callable[[float, str], None]], record_indices: Optional[List[int]]) -> _Epoch:
    """One pass over the epoch's windows (this rank's share), stopping between steps when the budget is spent."""
    import torch
    from torch.utils.data import DataLoader

    config, dev, optimizer = session.config, session.device, session.optimizer
    budget_s = session.budget_s
    t0 = time.monotonic()
    session.dataset.set_epoch(epoch)
    sampler = None
    if session.dist.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(session.dataset, num_replicas=session.dist.world, rank=session.dist.rank,
                                     shuffle=False, drop_last=True)
    loader = DataLoader(session.dataset, batch_size=int(config.batch), sampler=sampler, shuffle=False,
                        num_workers=int(config.workers), pin_memory=dev.type == "cuda", drop_last=False,
                        persistent_workers=False, worker_init_fn=_worker_ignores_sigterm)
    use_amp = dev.type == "cuda" and bool(config.amp)
    session.model.train()
    loss_sum, n_windows, steps = 0.0, 0, 0
    n_steps = max(1, len(loader))
    stopped = False
    for x, y, idx in loader:
        if cancel is not None and cancel():
            raise Cancelled(f"training cancelled in epoch {epoch + 1}; --resume continues from epoch {epoch + 1}")
        if budget_s is not None:
            if steps and session.out_of_time():
                stopped = True
                break
            for group in optimizer.param_groups:
                group["lr"] = float(config.lr) * budget_lr_factor(config, epoch, session.elapsed() / budget_s)
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = session.model(x)
        loss = session.loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * x.shape[0]
        n_windows += int(x.shape[0])
        steps += 1
        if record_indices is not None:
            record_indices.extend(int(i) + epoch * 1_000_000 for i in idx)
        if progress is not None and (time.monotonic() - session.last_report >= 0.5 or steps == n_steps):
            session.last_report = time.monotonic()
            done = (min(1.0, session.elapsed() / budget_s) if budget_s
                    else (epoch + steps / n_steps) / config.epochs)
            progress(done, f"epoch {epoch + 1}" + (f", {session.elapsed() / 60:.1f}/{budget_s / 60:g} min"
                                                   if budget_s else f"/{config.epochs}"))
    if session.dist.world > 1:
        import torch.distributed as dist

        t = torch.tensor([loss_sum, float(n_windows)], dtype=torch.float64, device=dev)
        dist.all_reduce(t)
        loss_sum, n_windows = float(t[0]), int(t[1])
    lr = float(optimizer.param_groups[0]["lr"])
    session.scheduler.step()
    return _Epoch(loss_sum / max(1, n_windows), n_windows, lr, time.monotonic() - t0, stopped)


def _save_checkpoint(session: _Session, epoch: int) -> None:
    """Everything a resumed run needs to continue after ``epoch`` as if it had not stopped (written atomically)."""
    _atomic_torch_save({
        "format": CHECKPOINT_FORMAT, "epoch": epoch, "config": session.config.to_dict(),
        "model": session.net.state_dict(), "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(), "rng": _rng_state(), "history": session.history,
        "windows": session.windows, "seconds": session.elapsed()}, session.checkpoint)


def train(config: TrainConfig, train_cases: Dict[str, CachedCase], validator: Optional[Validator],
          run_dir: os.PathLike, classes: Sequence[ClassInfo], *, device: str = "auto", resume: bool = False,
          on_epoch: Optional[EpochCallback] = None, cancel: Optional[Callable[[], bool]] = None,
          progress: Optional[Callable[[float, str], None]] = None, tensorboard: bool = True,
          record_indices: Optional[List[int]] = None) -> TrainResult:
    """Train one network; returns it (unwrapped, on CPU-or-device) with the per-epoch history.

    ``validator``: scores the network on the validation cases (rank 0, every ``val_every`` epochs
    and after the last); None: no validation.

    ``record_indices`` (tests): filled with the plan indices this rank trained on, per epoch
    offset by ``epoch * 1_000_000``.
    """
    started = time.monotonic()
    run = Path(run_dir)
    session = _setup(config, train_cases, run, classes, device, started)
    if resume and session.checkpoint.is_file():
        _resume(session)
    elif config.init_weights:
        load_init_weights(session.net, config.init_weights)
    session.last_report = time.monotonic()
    writer = None
    if tensorboard and session.dist.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            writer = None

    last_val: Dict[str, Dict[str, Any]] = {}
    last_overlays: Dict[str, Any] = {}
    validated_at = None  # the epoch after which last_val was measured, in this call
    budget_s = session.budget_s
    for epoch in range(session.start_epoch, int(config.epochs)):
        if session.history and session.out_of_time():
            break  # (a fresh run trains at least one step, however short its budget)
        t0 = time.monotonic()
        done = _train_epoch(session, epoch, cancel=cancel, progress=progress, record_indices=record_indices)
        if not math.isfinite(done.loss):  # diverged: the weights are NaN now; keep the last checkpoint, write no model
            kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint was written"
            raise InputError(f"training diverged in epoch {epoch + 1} (loss {done.loss}; {kept}, no model): lower the "
                             f"learning rate (--lr, now {config.lr:g}) and start again in a new run folder")
        val_dsc = None
        if session.dist.main and validator and ((epoch + 1) % config.val_every == 0 or done.stopped
                                                or epoch + 1 == config.epochs):
            last_overlays = {}
            last_val = validator(session.net, session.device, keep=last_overlays)
            validated_at = epoch + 1
            val_dsc = float(_pool(last_val, classes)["mean_dsc"])
            val_dsc = val_dsc if val_dsc == val_dsc else None  # NaN: nothing to score (no structure anywhere)
        session.windows += done.windows
        if done.stopped:
            eta = 0.0
        elif budget_s:
            eta = max(0.0, budget_s - session.elapsed())
        else:
            eta = (time.monotonic() - started) / (epoch + 1 - session.start_epoch) * (config.epochs - epoch - 1)
        record = {"epoch": epoch + 1, "epochs": int(config.epochs), "loss": done.loss, "val_dsc": val_dsc,
                  "lr": done.lr, "windows": done.windows, "windows_per_s": done.windows / max(done.seconds, 1e-9),
                  "seconds": time.monotonic() - t0, "eta_s": eta}
        session.history.append(record)
        if session.dist.main:
            if on_epoch is not None:  # the log before the checkpoint: a resume redoes (and re-logs) this epoch
                on_epoch(record)
            _save_checkpoint(session, epoch + 1)
            if writer is not None:
                for key in ("loss", "val_dsc", "lr", "windows_per_s"):
                    if record[key] is not None:
                        writer.add_scalar(key, record[key], epoch + 1)
        session.dist.barrier()
        if done.stopped:
            break
    if writer is not None:
        writer.close()
    # the validation of this call is returned only if it measured the final weights
    history = session.history
    final = validated_at is not None and validated_at == (history[-1]["epoch"] if history else 0)
    return TrainResult(session.net, history, val_cases=last_val if final else {}, seconds=session.elapsed(),
                       windows=session.windows, checkpoint=session.checkpoint,
                       overlays=last_overlays if final else {})


def _out_of_time(elapsed_s: float, budget_s: float, dist_info: Dist, dev) -> bool:
    """Whether the budget is spent; under DDP rank 0's clock decides for every rank (same step counts)."""
    over = elapsed_s >= budget_s
    if dist_info.world <= 1:
        return over
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if over else 0.0], device=dev)
    dist.broadcast(flag, src=0)
    return bool(flag.item() > 0)


def _pool(cases: Dict[str, Dict[str, Any]], classes: Sequence[ClassInfo]) -> Dict[str, Any]:
    from spineseg.metrics import pool_metrics

    return pool_metrics(cases, classes)
