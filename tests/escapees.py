"""A container command whose children escape its process group and session, for the tests that
check no process outlives its pod: one child calls setsid and one is double-forked (orphaned
at once, in a session of its own). Both ignore SIGTERM and say so in the log, so a test can
tell that the SIGTERM reached them and that SIGKILL ended them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kubetune_localcluster.processes import KILL_SIGNAL

PIDS_FILE = "escapees.pids"
"""Written in the command's working folder (the pod's folder) once both children run."""
READY = "escapees ready"

_ESCAPEE = (
    "import os, signal, sys, time\n"
    # One write per line: print's pieces are separate writes when stdout is unbuffered, and
    # three processes share the log.
    "said = f'{sys.argv[1]} got SIGTERM\\n'.encode()\n"
    "signal.signal(signal.SIGTERM, lambda *_: os.write(1, said))\n"
    "os.write(int(sys.argv[2]), b'+')\n"  # its handler is in place
    "while True: time.sleep(1)\n"
)


def script(*, exits: bool) -> str:
    """Python code that starts both escapees, writes their ids to PIDS_FILE once both ignore
    SIGTERM and prints READY. Then it exits 0 (`exits`), or stays, ignoring SIGTERM too."""
    then = "sys.exit(0)" if exits else "while True: time.sleep(1)"
    return f"""
import os, signal, subprocess, sys, time
if not {exits}:
    signal.signal(signal.SIGTERM, lambda *_: os.write(1, b"main got SIGTERM\\n"))
escapee = {_ESCAPEE!r}
ready, ready_writer = os.pipe()
setsid = subprocess.Popen(
    [sys.executable, "-c", escapee, "setsid", str(ready_writer)],
    start_new_session=True,
    pass_fds=(ready_writer,),
)
middle_read, middle_write = os.pipe()
if os.fork() == 0:
    grandchild = os.fork()
    if grandchild == 0:
        os.setsid()
        os.set_inheritable(ready_writer, True)
        argv = [sys.executable, "-c", escapee, "double-forked", str(ready_writer)]
        os.execv(sys.executable, argv)
    os.write(middle_write, str(grandchild).encode())
    os._exit(0)
os.wait()
pids = [setsid.pid, int(os.read(middle_read, 32))]
assert os.read(ready, 1) + os.read(ready, 1) == b"++"
with open({PIDS_FILE!r}, "w") as file:
    file.write(" ".join(map(str, pids)))
print({READY!r}, flush=True)
{then}
"""


def pids(folder: Path) -> list[int]:
    """The escapees' ids, from the pids file in the command's folder."""
    return [int(pid) for pid in (folder / PIDS_FILE).read_text().split()]


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def kill(left: list[int]) -> None:
    """Leave nothing behind when a test failed: the KILL_SIGNAL of an init (which ends all below
    it), and the default action of that signal (to end) for the escapees."""
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, KILL_SIGNAL)
