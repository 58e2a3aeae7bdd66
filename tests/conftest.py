"""Shared fixtures: the shared data folder beside the repo, read in place and never copied."""

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("ELBOX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The folder ../shared/data; tests that need it skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is missing (set ELBOX_SHARED_DATA to its path)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
