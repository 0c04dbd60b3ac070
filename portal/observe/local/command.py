"""What one replica of a local placement runs: the launch's argv on the replica's own port, or the
engine simulator standing in for an engine that is not installed (the region's `local.engines`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
SIMULATOR = "simulator"
# The portal's own settings (database URL, pepper, tokens) are never handed to an engine process.
PRIVATE_PREFIXES = ("MODELFLEET_",)
# The simulator is a program the portal starts, not code it imports: where its package lives, so the
# child finds it whatever its working directory.
_SPEC = importlib.util.find_spec(SIMULATOR)
PROJECT_ROOT = Path(_SPEC.origin if _SPEC and _SPEC.origin else __file__).resolve().parents[1]


class LaunchError(Exception):
    """The launch cannot run on this machine (the message says why and what to change)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    env: dict[str, str]
    engine: str  # what runs: the launch's engine, or "simulator"
    stands_in_for: str | None  # the engine the simulator runs in place of

    @property
    def simulated(self) -> bool:
        return self.engine == SIMULATOR


def replica_command(launch: Mapping[str, Any], served_name: str, port: int) -> Command:
    """The command for one replica listening on `port` (raises LaunchError)."""
    engine = str(launch.get("engine", "engine"))
    mode = launch.get("engines", "auto")
    command = [str(a) for a in launch.get("command") or []]
    program = command[0] if command else None
    installed = program is not None and shutil.which(program) is not None
    env = platform_env() | {str(k): str(v) for k, v in (launch.get("env") or {}).items()}
    if mode == "simulate" or (mode == "auto" and not installed):
        return _simulator(engine, served_name, port, env)
    if program is None:
        raise LaunchError("NoCommand", f"the {engine} launch has no command to run")
    if not installed:
        raise LaunchError(
            "EngineNotInstalled",
            f"{program!r} is not on the portal's PATH: install {engine} on this machine, or set the "
            "region's local.engines to simulate (or auto) to run the engine simulator in its place",
        )
    args = on_port([str(a) for a in launch.get("args") or []], port, engine)
    return Command((*command, *args), env, engine, None)


def on_port(args: Sequence[str], port: int, engine: str) -> list[str]:
    """`args` listening on loopback at `port`: the values of `--port` and `--host` replaced."""
    out = list(args)
    found = False
    for i, arg in enumerate(out):
        for flag, value in (("--port", str(port)), ("--host", LOOPBACK)):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = value
                found = found or flag == "--port"
            elif arg.startswith(flag + "="):
                out[i] = f"{flag}={value}"
                found = found or flag == "--port"
    if not found:
        raise LaunchError(
            "NoPortFlag",
            f"the {engine} launch sets no --port: the local runtime cannot give each replica its own port",
        )
    return out


def platform_env() -> dict[str, str]:
    """The portal's environment minus its own secrets and settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}


def _simulator(engine: str, served_name: str, port: int, env: dict[str, str]) -> Command:
    path = [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    argv = (
        sys.executable,
        "-m",
        "simulator",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--model",
        served_name,
        "--profiles",
        "--stands-in-for",
        engine,
    )
    env = env | {"PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}
    return Command(argv, env, SIMULATOR, engine)
