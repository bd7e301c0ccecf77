"""The init every container runs under (kubetune_localcluster/podinit.py, started by
processes.py): it ends all that its command started, setsid'd and double-forked children
included; exit codes, signals and the environment pass through unchanged; and it dies with a
kubelet that is SIGKILLed."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune_localcluster import processes
from tests import escapees
from tests.eventually import eventually_async

PY = sys.executable


async def start(
    folder: Path, argv: list[str], env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, Path]:
    """Start argv under its init in `folder`, logging to folder/log: the init and the log."""
    log_path = folder / "log"
    with log_path.open("ab") as log:
        process = await processes.start(
            argv, cwd=folder, env=os.environ if env is None else env, log=log
        )
    return process, log_path


async def logged(log: Path, *texts: str, timeout: float = 10.0) -> str:
    """The log once it holds every text (polled: a file offers nothing to await)."""

    async def holding() -> str:
        content = log.read_text() if log.exists() else ""
        assert all(text in content for text in texts), f"{texts} not in the log: {content!r}"
        return content

    return await eventually_async(holding, timeout=timeout, message=f"{texts} in {log.name}")


async def test_what_a_command_left_behind_ends_when_it_exits(tmp_path: Path) -> None:
    process, _ = await start(tmp_path, [PY, "-c", escapees.script(exits=True)])
    assert await process.wait() == 0
    # The init exits only once every descendant is reaped: nothing is left, at once.
    left = [pid for pid in escapees.pids(tmp_path) if escapees.alive(pid)]
    assert left == []


async def test_sigterm_reaches_every_process_and_sigkill_follows_the_grace_period(
    tmp_path: Path,
) -> None:
    process, log = await start(tmp_path, [PY, "-c", escapees.script(exits=False)])
    await logged(log, escapees.READY)
    pids = escapees.pids(tmp_path)
    assert all(escapees.alive(pid) for pid in pids)
    began = time.monotonic()
    await processes.end_processes([process], grace=1.0)
    elapsed = time.monotonic() - began
    assert process.returncode == -signal.SIGKILL
    assert 0.9 <= elapsed < 5
    text = log.read_text()
    for who in ("main", "setsid", "double-forked"):
        assert f"{who} got SIGTERM" in text
    assert not any(escapees.alive(pid) for pid in pids)


async def test_a_command_that_ends_on_sigterm_within_the_grace_period_ends_at_once(
    tmp_path: Path,
) -> None:
    process, log = await start(
        tmp_path, [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    )
    await logged(log, "up")
    began = time.monotonic()
    await processes.end_processes([process], grace=30)
    assert time.monotonic() - began < 5
    assert process.returncode == -signal.SIGTERM


@pytest.mark.parametrize(
    ("code", "returncode"),
    [
        ("sys.exit(3)", 3),
        ("sys.exit(0)", 0),
        ("os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
        ("os.kill(os.getpid(), signal.SIGSEGV)", -signal.SIGSEGV),
    ],
)
async def test_the_exit_code_or_the_signal_of_the_command_passes_through(
    tmp_path: Path, code: str, returncode: int
) -> None:
    process, _ = await start(tmp_path, [PY, "-c", f"import os, signal, sys; {code}"])
    assert await process.wait() == returncode


async def test_a_command_that_cannot_be_executed_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(processes.StartError, match=r"^No such file or directory$"):
        await start(tmp_path, ["/nonexistent/train"])
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    with pytest.raises(processes.StartError, match=r"^Permission denied$"):
        await start(tmp_path, [str(script)])


async def test_the_command_gets_exactly_the_environment_given(tmp_path: Path) -> None:
    # Python variables that would break a Python init do not touch it, and no variable is
    # added (Python adds LC_CTYPE to its own under the C locale).
    env = {"PATH": os.environ["PATH"], "ONLY": "this", "PYTHONHOME": "/nowhere", "LC_ALL": "C"}
    process, log = await start(tmp_path, ["env"], env=env)
    assert await process.wait() == 0
    assert sorted(log.read_text().splitlines()) == sorted(f"{k}={v}" for k, v in env.items())


KUBELET = """
import asyncio, sys
from pathlib import Path
from kubetune_localcluster import processes
folder, command = Path(sys.argv[1]), [sys.executable, "-c", sys.argv[2]]

async def serve():  # as the kubelet starts them: from its event loop
    with (folder / "log").open("ab") as log:
        init = await processes.start(command, cwd=folder, env={}, log=log)
    print(init.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(serve())
"""


async def test_a_pods_processes_die_with_a_kubelet_that_is_killed(tmp_path: Path) -> None:
    kubelet = subprocess.Popen(
        [PY, "-c", KUBELET, str(tmp_path), escapees.script(exits=False)],
        stdout=subprocess.PIPE,
    )
    try:
        assert kubelet.stdout is not None
        init = int(kubelet.stdout.readline())
        await logged(tmp_path / "log", escapees.READY)
        pids = [init, *escapees.pids(tmp_path)]
        assert all(escapees.alive(pid) for pid in pids)
    finally:
        kubelet.kill()
        kubelet.wait()

    # The init's parent-death signal: it kills every descendant, then itself ends.
    async def ended() -> bool:  # polling /proc: nothing to await for another's child
        left = [pid for pid in pids if escapees.alive(pid)]
        assert left == []
        return True

    try:
        await eventually_async(ended, timeout=10, message="every process of the pod ended")
    finally:
        escapees.kill([pid for pid in pids if escapees.alive(pid)])
    assert "got SIGTERM" not in (tmp_path / "log").read_text()  # killed, with no grace


def test_the_init_is_plain_standard_library() -> None:
    """It runs under `python -I -S` with the container's env: importing kubetune there could
    fail (a trainer's PYTHONPATH, a venv not on the path)."""
    tree = ast.parse(Path(processes.podinit.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported
    assert {name.split(".")[0] for name in imported} <= {*sys.stdlib_module_names, "__future__"}
