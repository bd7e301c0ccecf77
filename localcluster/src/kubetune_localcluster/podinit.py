"""The init process of one container on the local kubelet: it runs the container's command
and ends everything that command started.

A container runtime gives each container a PID namespace and a cgroup, and when the
container's first process ends the kernel kills the rest. Here processes share the host, so
this program stands in, as tini does in an image. It is a child subreaper
(PR_SET_CHILD_SUBREAPER): an orphan is reparented to it rather than to PID 1, so every process
the command starts stays its descendant, one that calls setsid or double-forks included.
- SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGUSR2 are forwarded to every descendant (tini -s -g
  forwards to the child's process group only, which a setsid'd child has left).
- KILL_SIGNAL (SIGUSR1) SIGKILLs every descendant. It is also the parent-death signal
  (PR_SET_PDEATHSIG), so a pod's processes die with a kubelet that is SIGKILLed.
- When the command's process ends, the rest are SIGKILLed, and once every descendant has been
  reaped this process exits as the command did: its exit code, or killed by its signal.

Before that, it writes to the file descriptor given first why the command could not be
executed, or nothing, and closes it: the kubelet's StartError.

Usage: `python -I -S podinit.py REPORT_FD PARENT_PID -- COMMAND [ARG...]`, with the
container's environment. It uses the standard library only and imports nothing of kubetune,
so no PYTHON* variable of the container can break it. Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys

KILL_SIGNAL = signal.SIGUSR1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2)
HANDLED = {*FORWARDED, KILL_SIGNAL, signal.SIGCHLD}
CANNOT_START_EXIT_CODE = 128
RESCAN_SECONDS = 0.05
"""While killing: how long to wait for a child to exit before looking for descendants again
(one forked between a scan and its kill)."""
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({option}): {os.strerror(error)}")


def descendants(root: int) -> list[int]:
    """The ids of every process below `root`, from /proc (zombies included)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", "rb") as stat:
                # After "pid (command)": state, then the parent's id.
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    frontier = [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return found


def _signal_all(signum: int) -> None:
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap(main_pid: int, main_status: int | None) -> tuple[int | None, bool]:
    """Reap every child that has ended: (the command's wait status once known, whether any
    child is left)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return main_status, False
        if pid == 0:
            return main_status, True
        if pid == main_pid:
            main_status = status


def _end_all(main_pid: int, main_status: int | None) -> int:
    """SIGKILL every descendant and reap them all; the command's wait status."""
    while True:
        _signal_all(signal.SIGKILL)
        main_status, left = _reap(main_pid, main_status)
        if not left:
            # A subreaper outlives its descendants: no child means nothing of the pod is left.
            assert main_status is not None
            return main_status
        signal.sigtimedwait({signal.SIGCHLD}, RESCAN_SECONDS)


def _supervise(main_pid: int) -> int:
    """Forward signals until the command ends or KILL_SIGNAL comes; its wait status."""
    main_status: int | None = None
    while True:
        signum = signal.sigwaitinfo(HANDLED).si_signo
        if signum == signal.SIGCHLD:
            main_status, _ = _reap(main_pid, main_status)
            if main_status is not None:
                return _end_all(main_pid, main_status)
        elif signum == KILL_SIGNAL:
            return _end_all(main_pid, main_status)
        else:
            _signal_all(signum)


def _exit_as(status: int) -> None:
    """Exit as a process with this wait status did: so the kubelet reads the command's exit
    code, or the signal that killed it."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command's core dump, not ours
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os._exit(128 + signum)  # a signal whose default is not to terminate
    os._exit(os.waitstatus_to_exitcode(status))


def _started_environment() -> dict[bytes, bytes]:
    """The environment this process was started with, which the command gets: Python may add
    LC_CTYPE to its own at start-up (PEP 538), /proc keeps the original."""
    with open("/proc/self/environ", "rb") as environ:
        entries = environ.read().split(b"\0")
    return dict(entry.split(b"=", 1) for entry in entries if b"=" in entry)


def main(argv: list[str]) -> None:
    if len(argv) < 5 or argv[3] != "--":
        sys.exit("usage: podinit.py REPORT_FD PARENT_PID -- COMMAND [ARG...]")
    report_fd, parent, command = int(argv[1]), int(argv[2]), argv[4:]
    # Blocked, then taken with sigwaitinfo: none is lost, and none interrupts a kill loop.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, KILL_SIGNAL)
    if os.getppid() != parent:
        os._exit(CANNOT_START_EXIT_CODE)  # the kubelet died before the parent-death signal was set
    os.set_inheritable(report_fd, False)
    try:
        main_pid = os.posix_spawnp(
            command[0],
            command,
            _started_environment(),
            setsigmask=(),
            # What Python ignores for itself, as subprocess's restore_signals does.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as error:
        os.write(report_fd, (error.strerror or str(error)).encode())
        os._exit(CANNOT_START_EXIT_CODE)
    os.close(report_fd)
    _exit_as(_supervise(main_pid))


if __name__ == "__main__":
    main(sys.argv)
