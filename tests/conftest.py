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
