"""Shared fixtures. The real data lives in ../shared/data (CI has it); tests that need it skip
cleanly when it is absent. One local Ray instance is shared by the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STICKGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_REFERENCE = SHARED_DATA.parent / "reference"
BANDAI_DIR = SHARED_DATA / "mocap" / "bandai-namco-1" / "data"
CMU_DIR = SHARED_DATA / "mocap" / "cmu"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def bandai_dir() -> Path:
    return _need(BANDAI_DIR)


@pytest.fixture(scope="session")
def cmu_dir() -> Path:
    return _need(CMU_DIR)


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    return _need(SHARED_REFERENCE)


@pytest.fixture(scope="session")
def ray_local():
    """One in-process local Ray for the whole test session (Data, Train and Serve tests share
    it). `address="local"` never attaches to a stale cluster left by a killed `ray start`."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
    yield ray
    # shut down at session end only; Serve tests clean up their own applications
