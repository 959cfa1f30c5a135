"""N4 speed and accuracy: fast settings against full-resolution N4 on an 880x880x12 volume.

Prints one table per volume: setting, seconds, relative L2 of the corrected image against
full-resolution N4 (4x50 iterations) over the foreground, and, where the true bias field is
known, the relative L2 error of the recovered field (both normalised to mean 1 over the foreground).

Volumes: the phantom (``spineseg.phantom.make_phantom()``, true field = ratio of noise-free phantoms
with and without bias) and, when ../shared/data is present,
a real SPIDER case resliced to 880x880x12 thick slices with a known synthetic bias field.
The full-resolution reference takes minutes; it is cached under ``.cache/n4-bench/``
(``--recompute`` redoes it).

    .venv/bin/python benchmarks/n4.py [--no-spider] [--recompute] [--threads N] [--extra]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spineseg.preprocessing import (  # noqa: E402
    DEFAULT_CONVERGENCE, DEFAULT_ITERATIONS, DEFAULT_SHRINK, estimate_log_bias_field, relative_l2)

CACHE = ROOT / ".cache" / "n4-bench"
SPIDER = ROOT.parent / "shared" / "data" / "spider-t2space"
SIZE = (880, 880, 12)
SPACING = (0.345, 0.345, 4.4)


def synthetic_bias(shape_zyx: Tuple[int, int, int], seed: int, strength: float = 0.35) -> np.ndarray:
    """Smooth multiplicative field (mean 1), a few broad Gaussians in log space: up to about +-strength."""
    rng = np.random.default_rng(seed)
    z, y, x = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape_zyx]
    log = np.zeros(shape_zyx, dtype=np.float32)
    for _ in range(4):
        cz, cy, cx = rng.uniform(-1, 1, 3)
        w = rng.uniform(0.5, 1.2)
        a = rng.uniform(-strength, strength)
        log += a * (np.exp(-((z[:, None, None] - cz) ** 2) / (2 * (2 * w) ** 2))
                    * np.exp(-((y[None, :, None] - cy) ** 2) / (2 * w ** 2))
                    * np.exp(-((x[None, None, :] - cx) ** 2) / (2 * w ** 2)))
    log += np.float32(strength) * (0.6 * y[None, :, None] - 0.4 * x[None, None, :])
    return np.exp(log - log.mean()).astype(np.float32)


def phantom_volume() -> Tuple[sitk.Image, np.ndarray, Optional[sitk.Image]]:
    """The team phantom at 880x880x12 and its true bias field (ratio of noise-free images with/without bias)."""
    from spineseg.phantom import make_phantom

    image = make_phantom(size=SIZE, spacing=SPACING, seed=0).image
    with_bias = sitk.GetArrayFromImage(make_phantom(size=SIZE, spacing=SPACING, seed=0, noise=0.0).image)
    without = sitk.GetArrayFromImage(make_phantom(size=SIZE, spacing=SPACING, seed=0, noise=0.0, bias=False).image)
    bias = (with_bias / np.maximum(without, 1e-6)).astype(np.float32)
    bias[without <= 1e-6] = 1.0
    return sitk.Cast(image, sitk.sitkFloat32), bias, None


def spider_volume(case: str = "spider_005") -> Tuple[sitk.Image, np.ndarray, sitk.Image]:
    """A SPIDER case resliced to 880x880x12 thick slices (slab averages) times a known bias field.

    Also returns the resliced image without the synthetic field: the scan has its own coil bias,
    so the recovered synthetic field is the ratio of the fields N4 finds with and without it.
    """
    image = sitk.Cast(sitk.ReadImage(str(SPIDER / f"{case}_image.nii.gz")), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)  # (slices, 640 SI, 512 AP)
    n = array.shape[0]
    edges = np.linspace(0, n, SIZE[2] + 1)
    thick = np.stack([array[int(round(a)):max(int(round(a)) + 1, int(round(b)))].mean(axis=0)
                      for a, b in zip(edges[:-1], edges[1:])])
    slab = sitk.GetImageFromArray(thick.astype(np.float32))
    sp = image.GetSpacing()
    slab.SetSpacing((sp[0], sp[1], sp[2] * n / SIZE[2]))
    out_spacing = (sp[0] * image.GetSize()[0] / SIZE[0], sp[1] * image.GetSize()[1] / SIZE[1], sp[2] * n / SIZE[2])
    ref = sitk.Image(SIZE[0], SIZE[1], SIZE[2], sitk.sitkFloat32)
    ref.SetSpacing(out_spacing)
    ref.SetOrigin(tuple(o - s / 2 + t / 2 for o, s, t in zip(slab.GetOrigin(), slab.GetSpacing(), out_spacing)))
    resliced = sitk.Resample(slab, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    bias = synthetic_bias(sitk.GetArrayViewFromImage(resliced).shape, seed=1)
    biased = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(resliced) * bias + np.float32(1.0))
    biased.CopyInformation(resliced)
    plain = resliced + 1.0
    return biased, bias, plain


Setting = Tuple[str, Dict]


def its_label(its) -> str:
    """[50, 50, 50, 50] -> '4x50'."""
    its = list(its)
    return f"{len(its)}x{its[0]}" if len(set(its)) == 1 else ",".join(map(str, its))


def settings(extra: bool) -> List[Setting]:
    fast = dict(shrink=DEFAULT_SHRINK, iterations=list(DEFAULT_ITERATIONS), convergence=DEFAULT_CONVERGENCE)
    rows: List[Setting] = [
        ("old default: shrink 4 along every axis, 4x50, B-spline field",
         dict(shrink=4, iterations=[50] * 4, convergence=0.001, isotropic=True, upsampling="bspline")),
        
        (f"**fast default**: shrink {fast['shrink']} (all axes, Otsu mask, linear field), {its_label(fast['iterations'])}, "
         f"conv {fast['convergence']:g}", fast),
    ]
    if extra:
        for shrink, its, conv in [(8, [50] * 4, 0.001), (8, [50] * 3, 0.001),
                                  (8, [25] * 4, 0.001), (8, [50] * 4, 0.01), (12, [50] * 4, 0.001),
                                  (16, [50] * 4, 0.001), (16, [25] * 4, 0.001)]:
            label = f"shrink {shrink}, {its_label(its)}, conv {conv:g}"
            if all(label != r[0] for r in rows):
                rows.append((label, dict(shrink=shrink, iterations=its, convergence=conv)))
        rows.append(("shrink 8, 4x50, B-spline field",
                     dict(shrink=8, iterations=[50] * 4, convergence=0.001, upsampling="bspline")))
    return rows


def run_setting(image: sitk.Image, kw: Dict) -> Tuple[float, float, np.ndarray, np.ndarray]:
    """(wall seconds, CPU seconds of all threads, corrected array, mask)."""
    kw = dict(kw)
    isotropic = kw.pop("isotropic", False)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if isotropic:  # the naive way: shrink every axis, including the 12 thick slices (size 12 -> 3)
        log, mask = _isotropic_shrink(image, **kw)
    else:
        log, mask = estimate_log_bias_field(image, **kw)
    corrected = sitk.GetArrayViewFromImage(image) / np.exp(log)
    return time.perf_counter() - t0, time.process_time() - c0, corrected, mask


def _isotropic_shrink(image: sitk.Image, *, shrink: int, iterations, convergence: float, upsampling: str):
    """N4 the way the first version did it (sitk.Shrink by the same factor along every axis)."""
    small = sitk.Shrink(image, [shrink] * 3)
    mask = sitk.OtsuThreshold(small, 0, 1, 200)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(iterations))
    n4.SetConvergenceThreshold(convergence)
    n4.Execute(small, mask)
    log = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image))
    full_mask = sitk.GetArrayFromImage(sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                     sitk.sitkUInt8, True)).astype(bool)
    return log - log[full_mask].mean(), full_mask


def reference(name: str, image: sitk.Image, recompute: bool) -> Tuple[float, float, np.ndarray, np.ndarray]:
    """Full-resolution N4 (shrink 1, 4x50, conv 0.001), cached on disk."""
    path = CACHE / f"{name}-fullres.npz"
    if path.exists() and not recompute:
        data = np.load(path)
        return float(data["seconds"]), float(data["cpu_seconds"]), data["corrected"], data["mask"]
    print(f"[{name}] computing full-resolution N4 reference (minutes) ...", file=sys.stderr, flush=True)
    seconds, cpu, corrected, mask = run_setting(image, dict(shrink=1, iterations=[50] * 4, convergence=0.001))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, seconds=seconds, cpu_seconds=cpu, corrected=corrected.astype(np.float32), mask=mask)
    tmp.replace(path)
    return seconds, cpu, corrected, mask


def field_error(image: sitk.Image, corrected: np.ndarray, true_bias: Optional[np.ndarray], mask: np.ndarray,
                baseline: Optional[np.ndarray] = None) -> str:
    """Relative L2 of the recovered field against the true one, both scaled to mean 1 over the mask.

    ``baseline``: the field estimated on the image without the synthetic bias (real scans have their own).
    """
    if true_bias is None:
        return "-"
    est = sitk.GetArrayViewFromImage(image) / np.maximum(corrected, 1e-12)
    if baseline is not None:
        est = est / baseline
    est = est / est[mask].mean()
    true = true_bias / true_bias[mask].mean()
    return f"{100 * relative_l2(est, true, mask):.2f}%"


def table(name: str, image: sitk.Image, true_bias: Optional[np.ndarray], plain: Optional[sitk.Image],
          rows: List[Setting], recompute: bool, repeats: int) -> None:
    ref_s, ref_cpu, ref, ref_mask = reference(name, image, recompute)
    size = "x".join(map(str, image.GetSize()))
    print(f"\n{name}: {size} at {' x '.join(f'{s:.3g}' for s in image.GetSpacing())} mm")
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| setting | wall s | CPU s | rel. L2 vs full-res (foreground) | field error |")
    print("|---|---:|---:|---:|---:|")
    ref_field = "-" if plain is not None else field_error(image, ref, true_bias, ref_mask)
    print(f"| full resolution, 4x50, conv 0.001{' (cached)' if not recompute else ''} | {ref_s:.1f} | {ref_cpu:.1f} "
          f"| 0 (reference) | {ref_field} |")
    for label, kw in rows:
        times, cpus = [], []
        for _ in range(repeats):
            seconds, cpu, corrected, _ = run_setting(image, kw)
            times.append(seconds)
            cpus.append(cpu)
        err = relative_l2(corrected, ref, ref_mask)
        baseline = None
        if plain is not None:
            _, _, plain_corrected, _ = run_setting(plain, kw)
            baseline = sitk.GetArrayViewFromImage(plain) / plain_corrected
        print(f"| {label} | {min(times):.2f} | {min(cpus):.2f} | {100 * err:.2f}% | {field_error(image, corrected, true_bias, ref_mask, baseline)} |",
              flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-spider", action="store_true", help="skip the real SPIDER case")
    parser.add_argument("--no-phantom", action="store_true", help="skip the phantom")
    parser.add_argument("--recompute", action="store_true", help="recompute the cached full-resolution references")
    parser.add_argument("--threads", type=int, default=0, help="SimpleITK threads (0: its default)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting; the fastest is shown")
    parser.add_argument("--extra", action="store_true", help="also sweep shrink/iterations/convergence")
    args = parser.parse_args(argv)
    if args.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    print(f"SimpleITK {sitk.Version.VersionString()}, {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads")
    rows = settings(args.extra)
    if not args.no_phantom:
        image, bias, plain = phantom_volume()
        table("phantom", image, bias, plain, rows, args.recompute, args.repeats)
    if not args.no_spider and SPIDER.is_dir():
        image, bias, plain = spider_volume()
        table("spider_005-thick", image, bias, plain, rows, args.recompute, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
