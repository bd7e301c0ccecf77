"""`kubetune cluster up` killed with SIGKILL, so its kubelet cannot stop anything: the pods'
processes die with it all the same, children that setsid or double-fork included."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests import escapees
from tests.eventually import eventually_async
from tests.localcluster.test_cluster_up import TIMEOUT, kubectl


async def test_no_pod_process_outlives_a_killed_cluster(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubetune.kubeconfig"
    workdir = tmp_path / "pods"
    up = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kubetune"),
        *("cluster", "up", "--kubeconfig", str(kubeconfig), "--port", "0"),
        *("--workdir", str(workdir)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    pids: list[int] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            assert up.stdout is not None
            printed = ""
            while "Ctrl-C stops" not in printed:
                line = (await up.stdout.readline()).decode()
                assert line, "cluster up ended early:\n" + printed
                printed += line
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "family"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.12-slim",
                        "command": [sys.executable, "-c", escapees.script(exits=False)],
                    }
                ],
            },
        }
        await kubectl(env, "apply", "-f", "-", stdin=json.dumps(pod))
        await kubectl(
            env, "wait", "--for=jsonpath={.status.phase}=Running", "pod/family", "--timeout=30s"
        )
        status = json.loads(await kubectl(env, "get", "pod", "family", "-o", "json"))["status"]
        init = int(status["containerStatuses"][0]["containerID"].removeprefix("process://"))

        async def ready() -> bool:  # polling the log: kubectl offers nothing to await
            return escapees.READY in await kubectl(env, "logs", "family")

        await eventually_async(ready, timeout=TIMEOUT, interval=0.05, message="the family ready")
        (folder,) = workdir.glob("default/family-*")
        pids = [init, *escapees.pids(folder)]
        assert all(escapees.alive(pid) for pid in pids)
    finally:
        up.kill()
        await up.wait()

    async def ended() -> bool:  # polling /proc: another process's children cannot be awaited
        left = [pid for pid in pids if escapees.alive(pid)]
        assert left == []
        return True

    try:
        await eventually_async(ended, timeout=10, message="every process of the pod ended")
    finally:
        escapees.kill([pid for pid in pids if escapees.alive(pid)])
