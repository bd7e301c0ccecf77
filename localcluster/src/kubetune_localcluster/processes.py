"""Starting and stopping a container's processes, for the local kubelet: each container runs
under its own init (podinit.py), which ends everything the container started, so this module
only speaks to the init.

Why an init that is a subreaper, not a cgroup per pod: it needs no root and no delegated
cgroup v2 hierarchy, so it works the same on every machine the project runs on, and one
mechanism is tested everywhere. What it cannot catch: a descendant left behind when the init
itself is SIGKILLed from outside (the OOM killer, a user); the kubelet never does that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from kubetune_localcluster import podinit

KILL_SIGNAL = podinit.KILL_SIGNAL
CANNOT_START_EXIT_CODE = podinit.CANNOT_START_EXIT_CODE


class StartError(Exception):
    """The container's command could not be executed (exec failed): the kubelet's reason
    StartError. The text is the system's, e.g. "No such file or directory"."""


def init_argv(argv: list[str], report_fd: int) -> list[str]:
    """The command line of an init running `argv` and reporting on `report_fd`."""
    program = str(Path(podinit.__file__))
    return [sys.executable, "-I", "-S", program, str(report_fd), str(os.getpid()), "--", *argv]


async def start(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], log: IO[bytes]
) -> asyncio.subprocess.Process:
    """Start `argv` under its init, in a session of its own (so a terminal's Ctrl-C reaches
    the kubelet, which stops its pods), with stdout and stderr to `log`. Returns the init once
    the command runs; StartError when it could not be executed."""
    report, report_writer = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *init_argv(argv, report_writer),
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(report_writer,),
        )
    except BaseException:
        os.close(report)
        raise
    finally:
        os.close(report_writer)
    try:
        error = await _read_to_end(report)
    except BaseException:  # cancelled: nobody would stop what was started
        _send(process, KILL_SIGNAL)
        raise
    if error:
        await process.wait()
        raise StartError(error.decode("utf-8", "replace"))
    return process


async def _read_to_end(fd: int) -> bytes:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    try:
        return await reader.read()
    finally:
        transport.close()


def _send(process: asyncio.subprocess.Process, signum: int) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            process.send_signal(signum)


async def end_processes(processes: list[asyncio.subprocess.Process], grace: float) -> None:
    """Stop containers as a kubelet does: SIGTERM to all their processes, then SIGKILL to
    what is left after `grace` seconds. Returns when none of their processes is left."""
    alive = [process for process in processes if process.returncode is None]
    for process in alive:
        _send(process, signal.SIGTERM)
    try:
        if alive and grace > 0:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in alive], timeout=grace)
    finally:  # cancelled within the grace period, too: the grace ends, not the stop
        for process in alive:
            _send(process, KILL_SIGNAL)
    # An init exits only once every process below it has been reaped.
    await asyncio.gather(*(process.wait() for process in alive))
