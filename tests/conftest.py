"""Shared fixtures: hardware named after what it is, and the demo stack rendered once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from fleet.pipeline import Rendering, build
from tests.fixtures import factories as f

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"

# The demo stack has a local region: a portal a test starts (in process or as `python -m portal`)
# would run its engines as processes that outlive the test. Tests of the local runtime turn it on.
os.environ.setdefault("MODELFLEET_LOCAL_RUNTIME_ENABLED", "false")

# Property tests run the same examples on every run, so a CI failure reproduces and a green run stays
# green; `HYPOTHESIS_PROFILE=explore make test` searches afresh (and keeps what it finds in .hypothesis/).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def demo() -> Rendering:
    return build(STACKS, "demo")


@pytest.fixture(params=f.HARDWARE, ids=[h.id for h in f.HARDWARE])
def hardware(request: pytest.FixtureRequest) -> f.Hardware:
    """Every accelerator we know, one test run each."""
    hw: f.Hardware = request.param
    return hw


@pytest.fixture
def nvidia_h100_80g_x8() -> f.Hardware:
    return f.nvidia_h100_80g_x8


@pytest.fixture
def nvidia_l20_x8_hami() -> f.Hardware:
    return f.nvidia_l20_x8_hami


@pytest.fixture
def ascend_910b3_x8() -> f.Hardware:
    return f.ascend_910b3_x8


@pytest.fixture
def ascend_910c_x16() -> f.Hardware:
    return f.ascend_910c_x16


@pytest.fixture
def ascend_310p_x4() -> f.Hardware:
    return f.ascend_310p_x4


@pytest.fixture
def metax_c500_x8() -> f.Hardware:
    return f.metax_c500_x8


@pytest.fixture
def biren_br166_x8() -> f.Hardware:
    return f.biren_br166_x8


@pytest.fixture
def amd_mi300x_x8() -> f.Hardware:
    return f.amd_mi300x_x8


@pytest.fixture
def hygon_k100_x8() -> f.Hardware:
    return f.hygon_k100_x8


@pytest.fixture
def mthreads_s4000_x8() -> f.Hardware:
    return f.mthreads_s4000_x8


@pytest.fixture
def iluvatar_bi_v150_x8() -> f.Hardware:
    return f.iluvatar_bi_v150_x8


@pytest.fixture
def cambricon_mlu590_x8() -> f.Hardware:
    return f.cambricon_mlu590_x8
