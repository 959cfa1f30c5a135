"""The bundled sample case (``Resources/Samples``): a real labelled MR volume for demos and tests.

Found the way the bundled model is (:func:`spineseg.modelfile.default_model_path`): next to the
``spineseg`` package, in the repository and in the installed Slicer extension alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

SAMPLE_CASE = "spider_018"


def sample_folder() -> Path:
    return Path(__file__).resolve().parent.parent / "Resources" / "Samples"


def bundled_sample() -> Optional[Tuple[Path, Path]]:
    """(image, label) of the bundled sample, or None when this installation has no samples."""
    folder = sample_folder()
    image, label = folder / f"{SAMPLE_CASE}_image.nii.gz", folder / f"{SAMPLE_CASE}_label.nii.gz"
    return (image, label) if image.is_file() and label.is_file() else None
