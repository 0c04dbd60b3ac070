"""Keep the garbage collector's full passes short in long-running servers.

CPython's oldest generation holds everything that survived start-up: modules, SQLAlchemy's and
pydantic's machinery, the gateway's snapshot. A full collection walks all of it while every request
waits: the gateway benchmark at 600 requests/s saw four of them, the longest 113 ms, which was its
whole p99. `gc.freeze()` moves the start-up heap into a permanent generation that collections skip
(it is what the CPython docs recommend for servers, and how Instagram runs Django), so full passes only
walk what was allocated since.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> None:
    """Call once the server has started (imports done, caches warm): collect, then freeze. Only the
    first call in a process does anything (a test process starts many apps; one pass is enough)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
