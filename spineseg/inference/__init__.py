"""Inference: sliding-window segmentation with a torch or an ONNX Runtime backend.

Importing this package does not import torch.
"""
from __future__ import annotations

from spineseg.inference.engine import InferenceOptions, SegmentationResult, load, segment_image

__all__ = ["InferenceOptions", "SegmentationResult", "load", "segment_image"]
