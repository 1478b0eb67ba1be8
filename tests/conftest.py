"""Shared fixtures. Real-data tests find ../shared/data through $LUNGMTL_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    """The real-data folder: $LUNGMTL_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("LUNGMTL_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not root.is_absolute():
        root = (REPO / root).resolve()
    return root if (root / "README.md").exists() or any(root.glob("*/manifest.csv")) else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("real CT data not found: set LUNGMTL_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small synthetic dataset (8 patients x 6 slices at 64 px), written once per module."""
    from lungmtl.data.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom")
    return write_phantom_dataset(root / "data", n_patients=8, n_slices=6, size=64, seed=1)
