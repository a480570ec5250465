"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WSSLIB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real polyp data beside the project (``../shared/data``); skips when absent."""
    if not (SHARED_DATA / "kvasir-seg" / "manifest.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set WSSLIB_SHARED_DATA)")
    return SHARED_DATA

