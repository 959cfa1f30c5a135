"""Inference speed on an 880x880x12 phantom, side by side, printed as a Markdown table.

Rows: the original predict loop re-implemented on the same weights (9x9 windows of
128x128 over the first and last 12 slices, fp32, uniform averaging, threshold 0.6);
the torch backend's Gaussian sliding window at overlap 0.5 and 0.25; MONAI vs our
NumPy stitcher alone (a 1x1x1 conv as network: which blends faster where);
``--tile`` (whole in-plane slab); the ONNX Runtime backend; end-to-end CLI runs
(read, N4 or not, inference, write). GPU rows run when CUDA is available, else
they say "no CUDA device".

    .venv/bin/python benchmarks/inference.py [--model DIR] [--quick] [--threads N]

Without ``--model`` it uses the bundled default model, or, while there is none,
the default architecture (hybrid, default width, 4 outputs) with random weights:
speed does not depend on the weights' values.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn: Callable[[], object], repeat: int, sync: Callable[[], None] = lambda: None,
          warmup: Optional[Callable[[], object]] = None) -> Tuple[float, float]:
    """(best, median) seconds over ``repeat`` runs after one warm-up (``warmup`` or ``fn`` itself)."""
    (warmup or fn)()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def original_predict_loop(network, volume, device, limit: Optional[int] = None) -> np.ndarray:
    """The original code's loop: 9x9 windows of 128x128 at depth 0 and D-12, one at a time, fp32,
    uniform averaging of the foreground probability, threshold 0.6."""
    import torch

    _, _, d, h, w = volume.shape
    win, n, depth = 128, 9, 12
    hs = np.linspace(0, max(h - win, 0), n).round().astype(int)
    ws = np.linspace(0, max(w - win, 0), n).round().astype(int)
    out = torch.zeros((d, h, w), device=device)
    count = torch.zeros((d, h, w), device=device)
    positions = [(d0, h0, w0) for d0 in (0, max(d - depth, 0)) for h0 in hs for w0 in ws][:limit]
    with torch.inference_mode():
        for d0, h0, w0 in positions:
            x = volume[:, :, d0:d0 + depth, h0:h0 + win, w0:w0 + win].contiguous()
            logits = network(x).float()
            fg = 1.0 - torch.softmax(logits, dim=1)[0, 0] if logits.shape[1] > 1 else torch.sigmoid(logits)[0, 0]
            out[d0:d0 + depth, h0:h0 + win, w0:w0 + win] += fg
            count[d0:d0 + depth, h0:h0 + win, w0:w0 + win] += 1
        label = (out / count.clamp(min=1)) > 0.6
    return label.cpu().numpy()


def make_model_dir(tmp: Path, explicit: Optional[str]) -> Tuple[Path, str]:
    from spineseg import modelfile

    if explicit == "bundled":
        default = modelfile.default_model_path()
        if default is None:
            raise SystemExit("no bundled model in this installation; give --model DIR")
        return Path(default), "bundled default model"
    if explicit:
        return Path(explicit), f"{explicit}"
    from spineseg.networks import build_network
    from spineseg.preprocessing import PreprocessingConfig

    header = modelfile.ModelHeader.create("benchmark-random", "hybrid", preprocessing=PreprocessingConfig().to_dict())
    net = build_network("hybrid", out_channels=header.out_channels)
    path = modelfile.save_model(tmp / "random_default", net, header)
    return path, "the design's default architecture (hybrid, default width) with random weights"


def phantom_image(path: Path, size=(880, 880, 12)):
    import SimpleITK as sitk

    from spineseg.phantom import make_phantom

    ph = make_phantom(size=tuple(size), spacing=(0.345, 0.345, 4.4), seed=0)
    sitk.WriteImage(ph.image, str(path), True)
    return ph.image


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder, or 'bundled' (default: the design's default architecture, "
                                        "random weights, at the input's resolution)")
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats (a smoke run)")
    parser.add_argument("--size", type=int, nargs=3, default=(880, 880, 12), metavar=("X", "Y", "Z"),
                        help="phantom size (x, y, z); default 880 880 12 (smaller only for a smoke run)")
    parser.add_argument("--sample", type=int, default=0, metavar="K",
                        help="CPU window rows: time K windows and scale to the whole volume (rows say so); 0: all")
    parser.add_argument("--threads", type=int, default=None, help="torch/onnxruntime CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import torch

    from spineseg.inference import InferenceOptions, load
    from spineseg.inference import sliding  # noqa: F401  (used in own())
    from spineseg.preprocessing import PreprocessingConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    rows: List[Tuple[str, str, str, str]] = []

    def add(what: str, device: str, settings: str, seconds: Optional[Tuple[float, float]], note: str = "") -> None:
        value = note if seconds is None else f"{seconds[0]:.3f} (median {seconds[1]:.3f})"
        rows.append((what, device, settings, value))
        print(f"  {what} | {device} | {settings} | {value}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model_dir, model_desc = make_model_dir(tmp, args.model)
        size_text = "x".join(str(v) for v in args.size)
        image_path = tmp / f"phantom_{size_text}.nii.gz"
        image = phantom_image(image_path, args.size)
        info_backend = load(model_dir, InferenceOptions(device="cpu"))
        header_prep = dict(info_backend.info.preprocessing)
        config = PreprocessingConfig.from_dict({**header_prep, "n4": False})
        volume = config.apply(image)[None]  # (1, D, H, W)
        window = info_backend.info.window

        devices = ["cpu"] + (["cuda"] if cuda else [])
        tile = (window[0], volume.shape[2], volume.shape[3])
        small = np.ascontiguousarray(volume[:, :, :window[1], :window[2]])  # CPU warm-up: one window
        for dev in devices:
            gpu = dev == "cuda"
            repeat = 5 if gpu else 1
            sync = torch.cuda.synchronize if gpu else (lambda: None)
            backend = load(model_dir, InferenceOptions(device=dev))
            net = backend.network
            x = torch.from_numpy(volume[None]).to(dev)
            warm = None if gpu else (lambda: backend.predict_volume(small, window=window, overlap=0.5, batch=1))
            k = args.sample if (args.sample and not gpu) else 0
            what = "original predict loop (9x9x2 windows 128x128x12, batch 1, fp32, uniform, thr 0.6)"
            if k:
                best, med = timed(lambda: original_predict_loop(net, x, torch.device(dev), limit=k), 1, sync, warm)
                add(what, dev, f"extrapolated: {k} of 162 windows timed, x{162 / k:.1f}",
                    (best * 162 / k, med * 162 / k))
            else:
                add(what, dev, "-", timed(lambda: original_predict_loop(net, x, torch.device(dev)), repeat, sync, warm))
            amp = gpu
            prec = "bf16" if amp else "fp32"
            for overlap in ([0.5, 0.25] if gpu or not args.quick else [0.5]):
                settings = f"{tuple(window)}, overlap {overlap}, batch 4, {prec}"
                if k:
                    # k windows side by side along W: a crop 128 + step*(k-1) wide, scaled to the full grid
                    n_full = len(sliding.window_grid(volume.shape[1:], window, overlap))
                    step = sliding.scan_interval(volume.shape[1:], window, overlap)[2]
                    crop = np.ascontiguousarray(volume[:, :window[0], :window[1], :window[2] + step * (k - 1)])
                    n_crop = len(sliding.window_grid(crop.shape[1:], window, overlap))
                    best, med = timed(lambda: backend.predict_volume(crop, window=window, overlap=overlap, batch=4,
                                                                     amp=amp), 1, sync, warm)
                    add("torch backend: Gaussian sliding window (NumPy stitcher on CPU, MONAI on GPU)", dev,
                        settings + f"; extrapolated: {n_crop} of {n_full} windows timed",
                        (best * n_full / n_crop, med * n_full / n_crop))
                    continue
                add("torch backend: Gaussian sliding window (NumPy stitcher on CPU, MONAI on GPU)", dev, settings,
                    timed(lambda: backend.predict_volume(volume, window=window, overlap=overlap, batch=4, amp=amp),
                          repeat, sync, warm))
            if k:
                side = min(volume.shape[2], volume.shape[3], 352)
                part = np.ascontiguousarray(volume[:, :, :side, :side])
                scale = volume.shape[2] * volume.shape[3] / float(side * side)
                best, med = timed(lambda: backend.predict_volume(part, window=(window[0], side, side), overlap=0.5,
                                                                 batch=1, amp=amp), 1, sync, warm)
                add("torch backend --tile (whole in-plane slab)", dev,
                    f"{tile}, {prec}; extrapolated: a {side}x{side} slab timed, x{scale:.2f} by area",
                    (best * scale, med * scale))
            else:
                add("torch backend --tile (whole in-plane slab)", dev, f"{tile}, {prec}",
                    timed(lambda: backend.predict_volume(volume, window=tile, overlap=0.5, batch=1, amp=amp),
                          repeat, sync, warm))
            # stitching alone (a 1x1x1 conv as the network): MONAI on the device vs our NumPy stitcher
            conv = torch.nn.Conv3d(1, 4, 1).to(dev).eval()
            stitch_backend = type(backend).__new__(type(backend))
            stitch_backend.__dict__.update(backend.__dict__)
            stitch_backend.network = conv
            stitch_backend.stitcher = "monai"

            def own(conv=conv):
                with torch.inference_mode():
                    def predict(batch):
                        t = torch.from_numpy(batch).to(dev)
                        return torch.softmax(conv(t).float(), dim=1).cpu().numpy()
                    probs = sliding.sliding_window(volume, predict, window=window, overlap=0.5, batch_size=4)
                return probs.argmax(0)

            add("stitching only (1x1x1 conv network): MONAI on device", dev, f"{tuple(window)}, overlap 0.5, batch 4",
                timed(lambda: stitch_backend.predict_volume(volume, window=window, overlap=0.5, batch=4, amp=amp),
                      3, sync))
            add("stitching only (1x1x1 conv network): own NumPy stitcher", dev,
                f"{tuple(window)}, overlap 0.5, batch 4", timed(own, 3, sync))
            del backend, net, x, stitch_backend
            if gpu:
                torch.cuda.empty_cache()
        if not cuda:
            add("GPU rows (network + stitching, end-to-end)", "cuda", "-", None, "no CUDA device")

        # ONNX Runtime backend (CPU; CUDA EP only with onnxruntime-gpu)
        onnx_dir = _onnx_model(model_dir, tmp)
        ob = load(onnx_dir, InferenceOptions(device="cpu", backend="onnx"))
        owarm = lambda: ob.predict_volume(small, window=window, overlap=0.5, batch=1)  # noqa: E731
        if not args.quick:
            add("onnx backend: NumPy Gaussian sliding window", "cpu", f"{tuple(window)}, overlap 0.5, batch 4, fp32",
                timed(lambda: ob.predict_volume(volume, window=window, overlap=0.5, batch=4), 1, warmup=owarm))
        add("onnx backend --tile", "cpu", f"{tile}, fp32",
            timed(lambda: ob.predict_volume(volume, window=tile, overlap=0.5, batch=1), 1, warmup=owarm))

        # end to end through the CLI (a fresh process: import, read, N4, inference, write)
        for dev in devices:
            runs = [([], "N4 (model default)"), (["--tile"], "N4, --tile"), (["--no-n4", "--tile"], "--no-n4 --tile")]
            if dev == "cpu" and args.quick:
                runs = runs[1:2]
            if dev == "cpu" and args.sample:
                add("end-to-end CLI (torch)", dev, "-", None, "skipped with --sample (torch on this CPU is too slow)")
                runs = []
            for extra, label in runs:
                add_cli(add, image_path, onnx_dir, tmp, dev, "torch", extra, label)
        add_cli(add, image_path, onnx_dir, tmp, "cpu", "onnx", ["--no-n4", "--tile"], "--no-n4 --tile")
        add_cli(add, image_path, onnx_dir, tmp, "cpu", "onnx", ["--tile"], "N4, --tile")

    print(f"\nInference speed, {size_text} phantom, model: {model_desc}; "
          f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if cuda else ", no GPU") + "\n")
    print("| path | device | settings | seconds per volume (best, median) |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def _onnx_model(model_dir: Path, tmp: Path) -> Path:
    """A copy of the model folder with model.onnx (exported here if the model has none)."""
    import shutil

    from spineseg.export import export_onnx

    target = tmp / "model_onnx"
    shutil.copytree(model_dir, target)
    if not (target / "model.onnx").is_file():
        export_onnx(target)
    return target


def add_cli(add, image_path: Path, model_dir: Path, tmp: Path, dev: str, backend: str, extra: List[str],
            label: str) -> None:
    out = tmp / f"seg_{dev}_{backend}_{len(extra)}.nii.gz"
    cmd = [sys.executable, "-m", "spineseg", "segment", str(image_path), "-o", str(out), "--model", str(model_dir),
           "--device", dev, "--backend", backend, "--overwrite", *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        add(f"end-to-end CLI ({backend})", dev, label, None, f"failed (exit {proc.returncode}): {tail[0][:120]}")
    else:
        add(f"end-to-end CLI ({backend}: start, read, preprocess, infer, write)", dev, label, (seconds, seconds))


if __name__ == "__main__":
    sys.exit(main())
