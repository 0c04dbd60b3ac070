"""Engine processes: started in their own process group, recognised by pid *and* start time (a pid
the kernel reused for another program is not ours), signalled as a group, reaped when they are ours."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (its own process group), stdout and stderr appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # its own group: stopping it stops its workers, never the portal
            close_fds=True,
        )


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, /proc/<pid>/stat field 22); None if gone."""
    stat = _stat(pid)
    return int(stat[19]) if stat is not None else None


def alive(pid: int, started: int) -> bool:
    """Whether `pid` is still the process that started at `started` and has not exited (a zombie has)."""
    stat = _stat(pid)
    return stat is not None and int(stat[19]) == started and stat[0] != "Z"


def reap(pid: int) -> int | None:
    """The exit code of `pid` if it is an exited child of this process (None: not ours, or running)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done == pid else None


def signal_group(pid: int, started: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group `pid` leads, unless `pid` is no longer that process."""
    if _stat(pid) is not None and start_time(pid) != started:
        return  # the pid was reused: the group is not ours
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the whole group is gone
        os.killpg(pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()
