"""Validation: each validation case segmented and scored as ``spineseg segment`` + ``spineseg evaluate`` would.

The trainer hands its in-memory network to the torch backend (as nnU-Net's trainer hands its
network to its predictor), and the case goes through the inference engine's own steps: the
model header's preprocessing of the case's image file, in-plane resampling to the model's
spacing and back, the same stitcher, the same post-processing. So the DSC in the curves, in
``model.json`` and in the CV reports is the DSC a user gets by segmenting the case with the
saved model and evaluating the result against its label file.

Preprocessing (N4 included) runs once per case; its output is kept, so each validation costs
the network only. A model trained on simulated thick slices (k > 1) is validated on the
thick-slice version of each case (:func:`~spineseg.training.sampling.thick_slice_images`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from spineseg.inference.backends import ModelInfo
from spineseg.inference.engine import InferenceOptions, PreparedImage, label_values, predict_prepared, prepare_image
from spineseg.metrics import case_metrics, reference_labels
from spineseg.training.data import Case, read_case
from spineseg.training.presets import TrainConfig, thick_k
from spineseg.training.sampling import thick_slice_images

#: case id -> canonical (image, ground truth, prediction, spacing), what the report's overlays draw
Overlays = Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[float, float, float]]]


class Validator:
    """Scores a network on fixed cases through the inference engine; ``info``: the header the model will have."""

    def __init__(self, cases: Dict[str, Case], config: TrainConfig, info: ModelInfo) -> None:
        self.cases = dict(cases)
        self.config = config
        self.info = info
        self.binary = info.task == "binary"
        self.options = InferenceOptions(overlap=float(config.val_overlap), amp=bool(config.amp))
        self.options.check()
        self._inputs: Dict[str, Tuple[PreparedImage, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def case_images(self, cid: str) -> Tuple[sitk.Image, sitk.Image]:
        """(image, label) of a case as it is segmented: the files, or their thick-slice version."""
        from spineseg.geometry import CanonicalFrame
        from spineseg.training.runner import data_values

        image, label, _ = read_case(self.cases[cid], data_values(self.config))
        k = thick_k(self.config, CanonicalFrame.of(image, warn=False).canonical_spacing[0])
        if k > 1:
            image, label = thick_slice_images(image, label, k)
        return image, label

    def _prepared(self, cid: str) -> Tuple[PreparedImage, np.ndarray]:
        if cid not in self._inputs:
            image, label = self.case_images(cid)
            prepared = prepare_image(image, self.info, self.options)
            gt = prepared.frame.to_canonical(sitk.GetArrayFromImage(label))
            self._inputs[cid] = (prepared, reference_labels(gt, self.info.classes, self.binary))
        return self._inputs[cid]

    def score(self, backend, *, keep: Optional[Overlays] = None) -> Dict[str, Dict[str, Any]]:
        """Per-case metrics (:func:`spineseg.metrics.case_metrics`) of ``backend`` on every case.

        ``keep``: filled with the overlay arrays of each case.
        """
        out: Dict[str, Dict[str, Any]] = {}
        for cid in sorted(self.cases):
            prepared, gt = self._prepared(cid)
            indices = predict_prepared(prepared, backend, self.options).indices
            pred, _ = label_values(indices, self.info, self.options)
            out[cid] = case_metrics(pred, gt, self.info.classes)
            if keep is not None:
                image = prepared.frame.to_canonical(sitk.GetArrayFromImage(self.case_images(cid)[0]))
                keep[cid] = (image, gt, pred, tuple(prepared.frame.canonical_spacing))
        return out

    def __call__(self, network, device, *, keep: Optional[Overlays] = None) -> Dict[str, Dict[str, Any]]:
        """:meth:`score` of an in-memory network on ``device``; its mode and device are restored
        (the backend moves it to the CPU when a GPU runs out of memory)."""
        from spineseg.inference.backends import TorchBackend

        was_training = network.training
        try:
            return self.score(TorchBackend(self.info, device, network=network), keep=keep)
        finally:
            network.to(device).train(was_training)

