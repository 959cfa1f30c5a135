"""From network output to a label map: argmax or threshold, label values, union, clean-up.

Pure NumPy/SimpleITK (no torch), shared by both backends.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

#: binary models: a voxel is foreground when its sigmoid probability reaches this
BINARY_THRESHOLD = 0.5


def decide(probabilities: np.ndarray, task: str) -> np.ndarray:
    """(K, D, H, W) probabilities -> (D, H, W) uint8 channel index (threshold for binary, argmax otherwise)."""
    if task == "binary":
        return (probabilities[0] >= BINARY_THRESHOLD).astype(np.uint8)
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def indices_to_values(indices: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Channel index i (1-based for foreground) -> ``values[i-1]``; 0 stays background."""
    lut = np.zeros(max(256, len(values) + 1), dtype=np.uint8)
    lut[1:len(values) + 1] = np.asarray(values, dtype=np.uint8)
    return lut[indices]


def union(label: np.ndarray) -> np.ndarray:
    """All foreground classes as one class (value 1)."""
    return (label > 0).astype(np.uint8)


def keep_largest(label: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Keep only the largest 6-connected component of each class; the rest becomes background."""
    out = label.copy()
    for value in values:
        mask = label == value
        if not mask.any():
            continue
        cc = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), False)
        cc = sitk.RelabelComponent(cc, sortByObjectSize=True)
        largest = sitk.GetArrayViewFromImage(cc) == 1
        out[mask & ~largest] = 0
    return out
