"""Pause Python's cyclic garbage collector while the pipeline builds a fleet.

Validating, planning and rendering allocate millions of small acyclic objects (dicts, strings,
frozen models). The collector would rescan the growing heap again and again, finding nothing to
free, and make the cost grow faster than the fleet. Reference counting still frees everything.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def collector_paused(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper
