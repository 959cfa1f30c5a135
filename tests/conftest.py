"""Shared test fixtures.

Tests that need the real SPIDER cases use ``shared_data``; it skips cleanly when
``../shared/data`` is absent (outside this workplace).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPINESEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
SPIDER = SHARED_DATA / "spider-t2space"


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    """Folder of the 33 SPIDER t2 SPACE cases; skips the test when it is not there."""
    if not SPIDER.is_dir() or not any(SPIDER.glob("*_image.nii.gz")):
        pytest.skip(f"shared data not found at {SPIDER}")
    return SPIDER


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores in CI: keep torch from oversubscribing them."""
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    yield
