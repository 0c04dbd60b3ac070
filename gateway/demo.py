"""The gateway's demo: the engine SIMULATOR behind serving targets when there is no cluster (`--demo`,
or `MODELFLEET_GATEWAY_SIMULATE_SERVINGS=true`). The demo's MaaS models and API key are control data,
seeded by the portal (portal/demo_maas.py).

The simulator is not a model: it invents text (simulator/app.py).

Started in process, on a free loopback port, in its own thread (its own event loop), by the gateway when
it starts; every serving target's in-cluster endpoint is replaced by it. Each served model gets a
profile that roughly matches its size (simulator/profiles.py), so comparing models shows different
speeds.
"""

from __future__ import annotations

from contextlib import ExitStack

from simulator.app import Simulator, serve_in_thread
from simulator.profiles import DEFAULT_PROFILE, PROFILES


def start_simulator(exits: ExitStack) -> str:
    """Serve a simulator that answers any model name; returns its base URL (closed with `exits`)."""
    simulator = Simulator(PROFILES, accept_any_model=True, default_profile=DEFAULT_PROFILE)
    return exits.enter_context(serve_in_thread(simulator.app))
