"""Fixtures for the Pulumi components: the demo stack captured once under mocks.

Every capture installs its own mocks (`set_mocks` is process-global), so these fixtures do not
depend on test order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.offline import Capture, capture_rendering_stack, capture_stack
from fleet.pipeline import Rendering, build

STACKS = Path(__file__).resolve().parents[2] / "stacks"


@pytest.fixture(scope="session")
def demo_rendering() -> Rendering:
    return build(STACKS, "demo")


@pytest.fixture(scope="session")
def demo_capture() -> Capture:
    """The real program (`components.program.main`) run for the demo stack."""
    return capture_stack(STACKS, "demo")


@pytest.fixture(scope="session")
def demo_components(demo_rendering: Rendering) -> Capture:
    """`deploy` of the demo rendering, without the config path."""
    return capture_rendering_stack(demo_rendering, "unit")
