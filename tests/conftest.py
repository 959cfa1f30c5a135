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


# CI has 2 cores and runs the suite with pytest-xdist on both: one thread per worker (and per
# CLI subprocess) is fastest; two OpenMP threads per process on an oversubscribed machine made
# a tiny training step 100x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield
