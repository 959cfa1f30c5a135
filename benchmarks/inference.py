"""Inference speed on an 880x880x12 phantom, side by side, printed as a Markdown table.

Rows: the original predict loop re-implemented on the same weights (9x9 windows of
128x128 over the first and last 12 slices, fp32, uniform averaging, threshold 0.6);
the torch backend's Gaussian sliding window at overlap 0.5 and 0.25; MONAI vs our
NumPy stitcher alone (a 1x1x1 conv as network: which blends faster where);
``--tile`` (whole in-plane slab); the ONNX Runtime backend; end-to-end CLI runs
(read, N4 or not, inference, write). GPU rows run when CUDA is available, else
they say "no CUDA device".

    .venv/bin/python benchmarks/inference.py [--model DIR] [--quick] [--threads N]
    .venv/bin/python benchmarks/inference.py --budget [--widths 8 16 24] [--inplane 0.6 0.9 1.2]
    .venv/bin/python benchmarks/inference.py --nnunet [--model DIR] [--nnunet-tiles K]

``--budget``: the CPU speed budget of a model to ship: ``spineseg segment --backend onnx`` end to
end (process start, read, N4, in-plane resampling, inference, write) of the volume, for ``hybrid``
at each width and in-plane spacing (random weights), with the Slicer module's default sliding
window and with ``--tile``, against ``--limit`` seconds.

``--nnunet``: nnU-Net v2's own ``nnUNetPredictor`` (a ``3d_fullres`` plan that nnU-Net makes
for the volume's geometry, default mirroring, random weights; :mod:`nnunet_peer`) beside
``spineseg segment`` on the same volume, and their ratio. Needs the ``bench`` extra.

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
sys.path.insert(0, str(ROOT / "benchmarks"))


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
    parser.add_argument("--budget", action="store_true", help="only the speed-budget table (see above)")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 24], help="--budget: hybrid widths")
    parser.add_argument("--inplane", type=float, nargs="+", default=[0.6, 0.9, 1.2],
                        help="--budget: in-plane spacings (mm) the models run at")
    parser.add_argument("--limit", type=float, default=15.0, help="--budget: seconds allowed end to end")
    parser.add_argument("--nnunet", action="store_true", help="only the nnU-Net predictor comparison (see above)")
    parser.add_argument("--nnunet-tiles", type=int, default=0, metavar="K",
                        help="--nnunet: time K of nnU-Net's tiles and scale to all of them (the row says so); 0: all")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.budget:
        return budget_table(args)
    if args.nnunet:
        return nnunet_table(args)

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


def _host(threads: Optional[int]) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
            f"{load:.1f} at the start, {threads or 'all'} threads")


def budget_table(args) -> int:
    """End-to-end ONNX segmentation time for each (width, in-plane spacing): which model fits the CPU budget."""
    from spineseg import modelfile
    from spineseg.export import export_onnx
    from spineseg.networks import build_network
    from spineseg.preprocessing import PreprocessingConfig

    size_text = "x".join(str(v) for v in args.size)
    rows = []
    print(f"speed budget, {size_text} phantom; {_host(args.threads)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        image_path = tmp / f"phantom_{size_text}.nii.gz"
        phantom_image(image_path, args.size)
        env = _thread_env(args.threads)
        for width in args.widths:
            for mm in args.inplane:
                header = modelfile.ModelHeader.create(f"budget-w{width}-{mm:g}", "hybrid", hparams={"width": width},
                                                      spacing=[4.4, float(mm), float(mm)],
                                                      preprocessing=PreprocessingConfig().to_dict())
                net = build_network("hybrid", out_channels=header.out_channels, width=width)
                params = sum(p.numel() for p in net.parameters()) / 1e6
                folder = modelfile.save_model(tmp / f"w{width}-{mm:g}", net, header)
                export_onnx(folder)
                cells = []
                for extra in ([], ["--tile"]):
                    wall, cpu = _cli_seconds(image_path, folder, tmp, extra, env)
                    cells.append((wall, cpu))
                    print(f"  width {width}, {mm:g} mm, {' '.join(extra) or 'windows'}: {wall:.1f} s wall, "
                          f"{cpu:.1f} s CPU", file=sys.stderr, flush=True)
                rows.append((width, mm, params, cells[0], cells[1]))
    print(f"\nCPU speed budget: `spineseg segment --backend onnx` end to end (start, read, N4, resample, infer, "
          f"write), {size_text} phantom at 0.345x0.345x4.4 mm, hybrid with random weights; {_host(args.threads)}; "
          f"one run each; limit {args.limit:g} s, judged on the CPU seconds (user + system of all threads: an "
          f"upper bound of the wall time on a quiet machine)\n")
    print("| width | in-plane mm | parameters (M) | sliding window (Slicer default): wall / CPU s | "
          "--tile: wall / CPU s | within limit |")
    print("|---:|---:|---:|---:|---:|---|")
    for width, mm, params, win, tile in rows:
        ok = "yes" if win[1] <= args.limit else ("with --tile" if tile[1] <= args.limit else "no")
        print(f"| {width} | {mm:g} | {params:.2f} | {win[0]:.1f} / {win[1]:.1f} | {tile[0]:.1f} / {tile[1]:.1f} | "
              f"{ok} |")
    return 0


def _thread_env(threads: Optional[int]) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _cli_seconds(image_path: Path, model_dir: Path, tmp: Path, extra: List[str], env: dict,
                 backend: str = "onnx") -> Tuple[float, float]:
    """(wall, CPU) seconds of one `spineseg segment` process (N4 as the model says); exits if it fails.

    The CPU seconds (user + system, all threads) bound the wall time on a quiet machine from above
    for the same work, so a row measured on a busy machine can still be judged against the limit.
    """
    import resource

    out = tmp / "budget_seg.nii.gz"
    cmd = [sys.executable, "-m", "spineseg", "segment", str(image_path), "-o", str(out), "--model", str(model_dir),
           "--device", "cpu", "--backend", backend, "--overwrite", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"spineseg segment failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def nnunet_table(args) -> int:
    """nnU-Net v2's predictor and `spineseg segment` on the same volume, side by side, with the ratio."""
    try:
        import nnunet_peer  # noqa: F401 - needs nnunetv2 (the bench extra)
        import nnunetv2  # noqa: F401
    except ImportError:
        print("benchmarks/inference.py --nnunet: nnunetv2 is not installed; pip install -e \".[bench]\" "
              "torch==2.13.0", file=sys.stderr)
        return 2
    import SimpleITK as sitk

    from spineseg.phantom import make_phantom

    size_text = "x".join(str(v) for v in args.size)
    threads = args.threads or os.cpu_count() or 1
    print(f"nnU-Net peer, {size_text} phantom; {_host(threads)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model_dir, model_desc = make_model_dir(tmp, args.model or "bundled")
        onnx_dir = _onnx_model(model_dir, tmp)
        images, labels = [], []
        for seed in (0, 1):  # nnU-Net plans from a data set: two phantoms of this geometry
            ph = make_phantom(size=tuple(args.size), spacing=(0.345, 0.345, 4.4), seed=seed)
            images.append(tmp / f"ph{seed}_image.nii.gz")
            labels.append(tmp / f"ph{seed}_label.nii.gz")
            sitk.WriteImage(ph.image, str(images[-1]), True)
            sitk.WriteImage(ph.label, str(labels[-1]), True)
        ours, ours_cpu = _cli_seconds(images[0], onnx_dir, tmp, [], _thread_env(args.threads))
        print(f"  spineseg segment: {ours:.1f} s ({ours_cpu:.1f} s CPU)", file=sys.stderr, flush=True)
        plans = nnunet_peer.plan_3d_fullres(tmp / "nnunet", images, labels)
        theirs, info = nnunet_peer.time_predictor(plans, images[0], threads, tiles=args.nnunet_tiles)
    how = (f"extrapolated: {info['timed_tiles']} of {info['tiles']} tiles timed" if info["timed_tiles"] < info["tiles"]
           else f"all {info['tiles']} tiles")
    print(f"\nnnU-Net v2's predictor beside SpineSeg, {size_text} phantom at 0.345x0.345x4.4 mm, CPU; {_host(threads)}\n")
    print("| predictor | model | settings | s per volume |")
    print("|---|---|---|---:|")
    print(f"| `spineseg segment --backend onnx` (start, read, N4, resample, infer, write) | {model_desc} | "
          f"Gaussian sliding window, overlap 0.5 | {ours:.1f} |")
    print(f"| nnU-Net v2 `nnUNetPredictor` (read, preprocess, predict, resample back) | 3d_fullres plan "
          f"(PlainConvUNet, {info['parameters_m']:.1f} M parameters, random weights) | patch "
          f"{'x'.join(map(str, info['patch']))} at {'x'.join(f'{v:g}' for v in info['spacing'])} mm, step 0.5, "
          f"Gaussian, mirroring over axes {tuple(info['mirror_axes'])}; {how} | {theirs:.1f} |")
    print(f"\nratio nnU-Net / SpineSeg: {theirs / ours:.1f}")
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
