"""Training throughput on a GPU: windows/s, GPU utilisation and peak memory per preset and network.

Runs the real training loop (:func:`spineseg.training.trainer.train`: DataLoader worker processes,
pinned memory, bf16 autocast for ``default``) on phantom cases at the target geometry
(880x880x12, 0.345x0.345x4.4 mm), and separately times the data loader alone, so the table
shows whether loading keeps the GPU busy. GPU utilisation is sampled with NVML
(``nvidia-ml-py``/``pynvml``) when installed.

    .venv/bin/python benchmarks/training_gpu.py [--cases 6] [--windows 96] [--workers 8] [--width 16]
        [--models hybrid nnunet-like] [--presets paper default]

Prints a Markdown table. Exits 2 with a message when CUDA is not available.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional


def _nvml_sampler(index: int):
    """(start, stop) -> mean utilisation %, or None without NVML."""
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    samples: List[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            samples.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            time.sleep(0.1)

    thread = threading.Thread(target=loop, daemon=True)

    def start() -> None:
        samples.clear()
        thread.start()

    def finish() -> Optional[float]:
        stop.set()
        thread.join()
        return sum(samples) / len(samples) if samples else None

    return start, finish


def _make_data(folder: Path, n: int) -> None:
    import SimpleITK as sitk

    from spineseg.phantom import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = make_phantom(seed=i)
        sitk.WriteImage(p.image, str(folder / f"ph{i}_image.nii.gz"))
        sitk.WriteImage(p.label, str(folder / f"ph{i}_label.nii.gz"))


def loader_rate(dataset, batch: int, workers: int, pin: bool, seconds: float = 10.0) -> float:
    """Windows/s the DataLoader alone delivers (no GPU work)."""
    from torch.utils.data import DataLoader

    dataset.set_epoch(0)
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=pin, shuffle=False)
    n, t0 = 0, None
    for x, _, _ in loader:
        if t0 is None:  # skip worker start-up
            t0 = time.perf_counter()
            continue
        n += x.shape[0]
        if time.perf_counter() - t0 > seconds:
            break
    return n / max(1e-9, time.perf_counter() - (t0 or time.perf_counter()))


def _loader_table(args) -> int:
    """Windows/s of the DataLoader alone for both presets at 0, 1, 2, ... workers (CPU only)."""
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.presets import preset_config
    from spineseg.training.runner import data_values, prepare_data
    from spineseg.training.sampling import WindowDataset

    tmp = Path(tempfile.mkdtemp(prefix="spineseg-bench-"))
    data = Path(args.data) if args.data else tmp / "data"
    if not args.data:
        _make_data(data, args.cases)
    counts = sorted({0, 1, args.workers})
    print(f"\nData loader alone (no GPU): {args.cases} phantom cases 880x880x12, {os.cpu_count()} CPU cores\n")
    print("| preset | " + " | ".join(f"{w} workers" for w in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for preset in ("paper", "default"):
        cfg = preset_config(preset, workers=0, preprocessing=PreprocessingConfig(n4=False).to_dict())
        prepared = prepare_data(data, cfg, tmp / "cache")
        ds = WindowDataset(prepared["cases"], cfg, data_values(cfg))
        loader_rate(ds, cfg.batch, 0, False, seconds=3.0)  # warm the page cache: every row reads warm files
        rates = [loader_rate(ds, cfg.batch, w, False, seconds=5.0) for w in counts]
        print(f"| {preset} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6, help="phantom cases (880x880x12)")
    ap.add_argument("--windows", type=int, default=96, help="windows per epoch (2 epochs; the second is timed)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--width", type=int, default=None, help="hybrid width (default: the network's default)")
    ap.add_argument("--models", nargs="+", default=["hybrid"], help="networks to time (default: hybrid)")
    ap.add_argument("--presets", nargs="+", default=["paper", "default"], choices=["paper", "default"])
    ap.add_argument("--data", help="use this data folder instead of generated phantoms")
    ap.add_argument("--loader-only", action="store_true",
                    help="time only the data loader (no GPU needed): windows/s per preset and worker count")
    args = ap.parse_args(argv)

    import torch

    if args.loader_only:
        return _loader_table(args)
    if not torch.cuda.is_available():
        print("benchmarks/training_gpu.py: CUDA is not available on this machine; run it on a GPU host", file=sys.stderr)
        return 2
    from spineseg.labels import SPINE_CLASSES
    from spineseg.preprocessing import PreprocessingConfig
    from spineseg.training.presets import preset_config
    from spineseg.training.runner import data_values, model_classes, prepare_data
    from spineseg.training.sampling import WindowDataset
    from spineseg.training.trainer import train

    tmp = Path(tempfile.mkdtemp(prefix="spineseg-bench-"))
    data = Path(args.data) if args.data else tmp / "data"
    if not args.data:
        _make_data(data, args.cases)
    rows: List[Dict[str, object]] = []
    for model, preset in [(m, p) for m in args.models for p in args.presets]:
        hparams = {"width": args.width} if args.width and model == "hybrid" else {}
        probe = preset_config(preset, model=model, hparams=hparams)
        per_case = max(1, args.windows // max(1, int(round(probe.cases_per_epoch * args.cases))))
        cfg = preset_config(preset, model=model, hparams=hparams, epochs=2, windows_per_case=per_case,
                            workers=args.workers, preprocessing=PreprocessingConfig(n4=False).to_dict())
        prepared = prepare_data(data, cfg, tmp / "cache")
        cases = prepared["cases"]
        ds = WindowDataset(cases, cfg, data_values(cfg))
        load = loader_rate(ds, cfg.batch, cfg.workers, True)
        torch.cuda.reset_peak_memory_stats()
        sampler = _nvml_sampler(torch.cuda.current_device())
        if sampler:
            sampler[0]()
        result = train(cfg, cases, None, tmp / f"run-{model}-{preset}", model_classes(cfg), device="cuda",
                       tensorboard=False)
        util = sampler[1]() if sampler else None
        timed = result.history[-1]
        rows.append({"model": model, "preset": preset, "batch": cfg.batch, "window": "x".join(map(str, cfg.window)),
                     "amp": "bf16" if cfg.amp else "fp32", "loss": cfg.loss,
                     "train windows/s": timed["windows_per_s"], "loader windows/s": load,
                     "GPU util %": util, "peak GiB": torch.cuda.max_memory_allocated() / 2 ** 30})
    print(f"\nGPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; {args.cases} phantom cases "
          f"880x880x12; hybrid{' width ' + str(args.width) if args.width else ''}; {args.workers} workers; "
          "second epoch timed; GPU utilisation averaged over both epochs (NVML, 10 Hz)\n")
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else ("n/a" if v is None else str(v)) for v in r.values()]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
