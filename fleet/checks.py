"""Checks of a stack that need more than the pure core, found by name instead of imported.

The policy pack runs the Pulumi program under mocks (`policies.offline.check_stack`), so it needs the
Pulumi SDK; the core never imports it. Installed packages offer such checks as entry points in the
`modelfleet.stack_checks` group (pyproject.toml declares the pack's), and `fleet check` runs what is
installed: a check that is missing is reported as not run, never as passed.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

GROUP = "modelfleet.stack_checks"

StackCheck = Callable[[Path, str], list[Any]]


def installed(name: str) -> StackCheck | None:
    """The check offered under `name`, or None when nothing installed offers it (or it fails to load,
    e.g. its SDK is missing)."""
    for point in entry_points(group=GROUP, name=name):
        try:
            check: StackCheck = point.load()
        except ImportError:
            return None
        return check
    return None
