"""Training, cross-validation and the data they read.

Modules: :mod:`~spineseg.training.data` (case discovery, validation, preprocessed cache,
k-fold split), :mod:`~spineseg.training.sampling` (windows and augmentation),
:mod:`~spineseg.training.presets` (the ``paper`` and ``default`` recipes),
:mod:`~spineseg.training.trainer` (loop, checkpoints, resume, AMP, DDP) and
:mod:`~spineseg.training.crossval` (folds, reports, ablation). Importing this package
does not import torch.
"""
