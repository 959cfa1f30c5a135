"""Training windows: which cases and windows an epoch draws, cropping, and augmentation.

Every window is a pure function of ``(seed, epoch, position in the epoch's plan)``: its
case, position, flips and intensity changes come from a NumPy generator seeded with those
three numbers. So the data a run sees does not depend on worker processes, on the number of
GPUs (ranks take disjoint slices of the same plan) or on where a killed run was resumed.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.geometry import CanonicalFrame
from spineseg.training.data import CachedCase
from spineseg.training.presets import TrainConfig, thick_k

PlanItem = Tuple[str, int]  # (case id, window number within the case)


def epoch_plan(case_ids: Sequence[str], config: TrainConfig, epoch: int) -> List[PlanItem]:
    """The windows of one epoch: ``cases_per_epoch`` of the cases, ``windows_per_case`` each, shuffled."""
    ids = sorted(case_ids)
    if not ids:
        return []
    rng = np.random.default_rng([int(config.seed), int(epoch), 7])
    n = max(1, int(round(float(config.cases_per_epoch) * len(ids))))
    chosen = [ids[int(i)] for i in rng.choice(len(ids), size=min(n, len(ids)), replace=False)]
    items = [(cid, j) for cid in chosen for j in range(int(config.windows_per_case))]
    order = rng.permutation(len(items))
    return [items[int(i)] for i in order]


def thicken(image: np.ndarray, label: Optional[np.ndarray], k: int, offset: int = 0,
            weights: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Simulate thick slices: average groups of ``k`` consecutive slices (axis 0) starting at ``offset``.

    ``weights`` (k values summing to 1): the slice profile, a weighted instead of a plain average
    (:func:`spineseg.training.augment.slice_weights`). The label of a thick slice is the label of its
    group's central thin slice (a partial-volume average has no single label; the centre is what the
    thick slice is positioned on).
    """
    k = int(k)
    if k <= 1:
        return image, label
    d = image.shape[0]
    k = min(k, d)
    offset = int(offset) % k if d - offset >= k else 0
    n = (d - offset) // k
    stop = offset + n * k
    groups = np.asarray(image[offset:stop], dtype=np.float32).reshape((n, k) + image.shape[1:])
    if weights is None:
        img = groups.mean(axis=1)
    else:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != (k,):
            raise ValueError(f"slice profile of {w.shape[0]} weights for {k} slices per thick slice")
        img = np.tensordot(w, groups, axes=([0], [1])).astype(np.float32)
    lab = None
    if label is not None:
        lab = np.ascontiguousarray(label[offset + k // 2: stop: k])
    return img, lab


def thick_slice_images(image: sitk.Image, label: sitk.Image, k: int) -> Tuple[sitk.Image, sitk.Image]:
    """A case as a thick-slice acquisition: :func:`thicken` by ``k`` along the slice axis.

    The images are on an axis-aligned grid in the canonical layout (slice spacing times ``k``),
    so segmenting and scoring them is what a user would do with such a scan.
    """
    frame = CanonicalFrame.of(image, warn=False)
    img = frame.to_canonical(sitk.GetArrayFromImage(image).astype(np.float32))
    lab = frame.to_canonical(sitk.GetArrayFromImage(label))
    timg, tlab = thicken(img, lab, k, 0)
    d_mm, h_mm, w_mm = frame.canonical_spacing
    out = []
    for arr in (timg, tlab):
        im = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        im.SetSpacing((w_mm, h_mm, d_mm * max(1, int(k))))
        out.append(im)
    return out[0], out[1]


def label_lookup(values: Sequence[int], binary: bool) -> np.ndarray:
    """256-entry table from label value to training target (channel index, or 0/1 when binary)."""
    table = np.zeros(256, dtype=np.int64)
    for i, v in enumerate(values):
        table[int(v)] = 1 if binary else i + 1
    return table


def _start(centre: int, size: int, window: int, rng: np.random.Generator, jitter: bool) -> int:
    if size <= window:
        return 0
    if jitter:
        centre = centre + int(rng.integers(-window // 4, window // 4 + 1))
    return int(np.clip(centre - window // 2, 0, size - window))


def crop_window(image: np.ndarray, label: np.ndarray, window: Sequence[int], k: int, rng: np.random.Generator,
                foreground: Optional[np.ndarray] = None, foreground_prob: float = 0.0,
                profile: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """A random (D, H, W) window, thick-slice simulated by ``k`` (slice ``profile``: :func:`thicken`),
    zero-padded to ``window``.

    With probability ``foreground_prob`` (and foreground present) the window is centred near a
    random foreground voxel; otherwise its position is uniform.
    """
    wd, wh, ww = (int(v) for v in window)
    d, h, w = image.shape
    src_d = min(d, wd * max(1, k))
    use_fg = foreground is not None and len(foreground) > 0 and rng.random() < foreground_prob
    if use_fg:
        z, y, x = (int(v) for v in foreground[int(rng.integers(len(foreground)))])
        z0 = _start(z, d, src_d, rng, False)
        y0 = _start(y, h, wh, rng, True)
        x0 = _start(x, w, ww, rng, True)
    else:
        z0 = int(rng.integers(0, d - src_d + 1))
        y0 = int(rng.integers(0, max(0, h - wh) + 1))
        x0 = int(rng.integers(0, max(0, w - ww) + 1))
    img = np.asarray(image[z0:z0 + src_d, y0:y0 + wh, x0:x0 + ww], dtype=np.float32)
    lab = np.asarray(label[z0:z0 + src_d, y0:y0 + wh, x0:x0 + ww])
    if k > 1:
        img, lab = thicken(img, lab, k, int(rng.integers(0, k)) if src_d - k >= k else 0, profile)
    out_img = np.zeros((wd, wh, ww), dtype=np.float32)
    out_lab = np.zeros((wd, wh, ww), dtype=lab.dtype)
    n = min(wd, img.shape[0])
    out_img[:n, :img.shape[1], :img.shape[2]] = img[:n]
    out_lab[:n, :lab.shape[1], :lab.shape[2]] = lab[:n]
    return out_img, out_lab


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, flips: bool, intensity: bool,
            scan: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Random flips of each axis (p = 0.5 each), optionally the scan changes of
    :func:`spineseg.training.augment.scan_augment`, then optionally intensity changes.

    Intensity (each p = 0.5): scale x U(0.8, 1.2), shift + U(-0.2, 0.2), gamma U(0.7, 1.5) on the
    window's min-max range, Gaussian noise with sigma U(0, 0.1) (in z-score units).
    """
    if flips:
        axes = tuple(a for a in range(3) if rng.random() < 0.5)
        if axes:
            image = np.flip(image, axes)
            label = np.flip(label, axes)
    if scan:
        from spineseg.training.augment import scan_augment

        image, _ = scan_augment(image, rng)
    if intensity:
        draws = rng.random(4)
        if draws[0] < 0.5:
            image = image * np.float32(rng.uniform(0.8, 1.2))
        if draws[1] < 0.5:
            image = image + np.float32(rng.uniform(-0.2, 0.2))
        if draws[2] < 0.5:
            lo, hi = float(image.min()), float(image.max())
            if hi > lo:
                unit = (image - lo) / (hi - lo)
                image = (np.power(unit, rng.uniform(0.7, 1.5)) * (hi - lo) + lo).astype(np.float32)
        if draws[3] < 0.5:
            image = image + rng.normal(0.0, rng.uniform(0.0, 0.1), size=image.shape).astype(np.float32)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label)


class WindowDataset:
    """Map-style dataset over one epoch's plan: item i -> (image (1, D, H, W), target, plan index).

    Targets: channel indices (int64, multi-class) or 0/1 float32 of shape (1, D, H, W) (binary).
    Arrays are memory-mapped from the cache, so worker processes share the page cache.
    """

    def __init__(self, cases: Dict[str, CachedCase], config: TrainConfig, class_values: Sequence[int]) -> None:
        self.cases = cases
        self.config = config
        self.lookup = label_lookup(class_values, config.binary)
        self.k = {cid: thick_k(config, c.spacing[0]) for cid, c in cases.items()}
        self.plan: List[PlanItem] = []
        self.epoch = 0
        self._arrays: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.plan = epoch_plan(list(self.cases), self.config, epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def _case_arrays(self, cid: str):
        if cid not in self._arrays:
            c = self.cases[cid]
            self._arrays[cid] = (c.image(), c.label(), c.foreground())
        return self._arrays[cid]

    def window(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        cid, _ = self.plan[index]
        cfg = self.config
        rng = np.random.default_rng([int(cfg.seed), self.epoch, int(index), 11])
        image, label, fg = self._case_arrays(cid)
        k = self.k[cid]
        if k > 1 and float(cfg.thick_prob) < 1.0 and rng.random() >= float(cfg.thick_prob):
            k = 1  # this window stays thin (mixed thin/thick training)
        profile = None
        if k > 1 and cfg.scan_aug:  # a random thickness and slice profile instead of the fixed k
            from spineseg.training.augment import draw_profile, draw_thickness

            k = draw_thickness(rng, self.cases[cid].spacing[0])
            profile = draw_profile(rng, k)
        img, lab = crop_window(image, label, cfg.window, k, rng, fg, float(cfg.foreground_prob), profile)
        return augment(img, lab, rng, flips=cfg.flips, intensity=cfg.intensity_aug, scan=cfg.scan_aug)

    def __getitem__(self, index: int):
        import torch

        img, lab = self.window(index)
        target = self.lookup[lab]
        x = torch.from_numpy(img[None])
        if self.config.binary:
            y = torch.from_numpy(target[None].astype(np.float32))
        else:
            y = torch.from_numpy(target)
        return x, y, int(index)
