"""Benchmark: the embedded API server under watch fan-out and over a long run of requests.

The server runs in a process of its own (as it does beside an operator); this process is the
clients, over HTTP with aiohttp, in one run:

1. Watch fan-out: 100 watchers watch ConfigMaps in one namespace while objects are created
   (a few requests in flight). Each watcher stamps each event line as it arrives; the latency
   of a delivery is its arrival time minus the time its create request was sent. Reported:
   p50 and p99 over every (object, watcher) delivery, and objects per second from the first
   create until every watcher has every object.
2. A long run: 20,000 requests made one at a time, cycles of create, get, patch, list (label
   selector) and delete, so the live objects stay few while the resourceVersion, the watch
   event windows and everything else a server might accumulate grow with the run; one watcher
   stays open. The ratio compares the mean cost of the last thousand requests to that of the
   first thousand (1.0: flat).

    .venv/bin/python bench/control_plane.py                      # about a minute on 2 cores
    .venv/bin/python bench/control_plane.py --objects 200 --requests 5000   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

NAMESPACE = "bench"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


async def serve() -> None:
    """The server process: print the URL and the token, serve until stdin closes."""
    from kubetune_localcluster.apiserver import ApiServer

    async with ApiServer() as server:
        print(server.url, flush=True)
        print(server.token, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {"bench": "yes"}},
        "data": {"params": json.dumps({"lr": 0.01, "layers": 4}), "trial": name},
    }


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def expect(response: aiohttp.ClientResponse, status: int) -> None:
    if response.status != status:
        raise RuntimeError(
            f"{response.method} {response.url}: {response.status} {await response.text()}"
        )


class Watcher:
    """One watch stream; each event line is stamped on arrival and parsed afterwards."""

    def __init__(self, session: aiohttp.ClientSession, since: str, expected: int = 0) -> None:
        self.session = session
        self.since = since
        self.expected = expected
        self.lines: list[tuple[float, bytes]] = []
        self.ready = asyncio.Event()
        self.done = asyncio.Event()  # set once `expected` events have arrived
        self.task: asyncio.Task[None] | None = None

    async def run(self, query: str = "") -> None:
        url = f"{CONFIGMAPS}?watch=1&resourceVersion={self.since}{query}"
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
            await expect(response, 200)
            self.ready.set()
            async for line in response.content:
                self.lines.append((time.perf_counter(), line))
                if len(self.lines) == self.expected:
                    self.done.set()

    def arrivals(self) -> dict[str, float]:
        """When each object's ADDED event arrived, by name."""
        found = {}
        for moment, line in self.lines:
            event = json.loads(line)
            if event["type"] == "ADDED":
                found[event["object"]["metadata"]["name"]] = moment
        return found


async def fan_out(
    url: str, headers: dict[str, str], watchers: int, objects: int, in_flight: int
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        async with session.get(CONFIGMAPS) as response:
            since = (await response.json())["metadata"]["resourceVersion"]
        streams = [Watcher(session, since, objects) for _ in range(watchers)]
        for stream in streams:
            stream.task = asyncio.create_task(stream.run())
        await asyncio.gather(*(stream.ready.wait() for stream in streams))

        sent: dict[str, float] = {}
        names = iter(f"fan-{i:06d}" for i in range(objects))

        async def creator() -> None:
            for name in names:
                sent[name] = time.perf_counter()
                async with session.post(CONFIGMAPS, json=configmap(name)) as response:
                    await expect(response, 201)

        start = time.perf_counter()
        await asyncio.gather(*(creator() for _ in range(in_flight)))
        async with asyncio.timeout(120):
            await asyncio.gather(*(stream.done.wait() for stream in streams))
        end = max(stream.lines[-1][0] for stream in streams)
        for stream in streams:
            assert stream.task is not None
            stream.task.cancel()
        latencies = []
        for stream in streams:
            arrived = stream.arrivals()
            latencies += [(arrived[name] - moment) * 1000 for name, moment in sent.items()]
        latencies.sort()
        async with session.delete(CONFIGMAPS) as response:  # leave the namespace empty
            await expect(response, 200)
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "objects_per_s": objects / (end - start),
        "deliveries_per_s": objects * watchers / (end - start),
    }


async def long_run(url: str, headers: dict[str, str], requests: int) -> dict[str, float]:
    async with aiohttp.ClientSession(url, headers=headers) as session:
        async with session.get(CONFIGMAPS) as response:
            since = (await response.json())["metadata"]["resourceVersion"]
        watcher = Watcher(session, since)
        task = asyncio.create_task(watcher.run())
        await watcher.ready.wait()
        costs: list[float] = []

        async def timed(method: str, path: str, status: int, **kwargs: Any) -> None:
            begin = time.perf_counter()
            async with session.request(method, path, **kwargs) as response:
                await response.read()
            costs.append(time.perf_counter() - begin)
            if response.status != status:
                raise RuntimeError(f"{method} {path}: {response.status}")

        number = 0
        while len(costs) < requests:
            name = f"run-{number:06d}"
            number += 1
            item = f"{CONFIGMAPS}/{name}"
            await timed("POST", CONFIGMAPS, 201, json=configmap(name, {"cycle": str(number % 7)}))
            await timed("GET", item, 200)
            patch = {"data": {"value": str(number)}}
            headers = {"Content-Type": "application/merge-patch+json"}
            await timed("PATCH", item, 200, data=json.dumps(patch), headers=headers)
            await timed("GET", f"{CONFIGMAPS}?labelSelector=cycle%3D{number % 7}", 200)
            await timed("DELETE", item, 200)
        task.cancel()
        costs = costs[:requests]
    first, last = costs[:1000], costs[-1000:]
    return {
        "first_ms": statistics.fmean(first) * 1000,
        "last_ms": statistics.fmean(last) * 1000,
        "first_median_ms": statistics.median(first) * 1000,
        "last_median_ms": statistics.median(last) * 1000,
        "ratio": statistics.fmean(last) / statistics.fmean(first),
        "events_watched": len(watcher.lines),
    }


async def bench(args: argparse.Namespace) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        headers = {"Authorization": f"Bearer {server.stdout.readline().strip()}"}
        async with aiohttp.ClientSession(url, headers=headers) as session:
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            async with session.post("/api/v1/namespaces", json=namespace) as response:
                await expect(response, 201)
        begin, cpu = time.perf_counter(), cpu_seconds(server.pid)
        fan = await fan_out(url, headers, args.watchers, args.objects, args.in_flight)
        fan_cpu = (cpu_seconds(server.pid) - cpu) / (time.perf_counter() - begin)
        begin, cpu = time.perf_counter(), cpu_seconds(server.pid)
        run = await long_run(url, headers, args.requests)
        run_cpu = (cpu_seconds(server.pid) - cpu) / (time.perf_counter() - begin)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    rows = [
        ("watchers", f"{args.watchers}"),
        ("objects created (requests in flight)", f"{args.objects} ({args.in_flight})"),
        ("create-to-watch delivery p50", f"{fan['p50']:.1f} ms"),
        ("create-to-watch delivery p99", f"{fan['p99']:.1f} ms"),
        ("objects per second, every watcher served", f"{fan['objects_per_s']:.0f}"),
        ("watch events delivered per second", f"{fan['deliveries_per_s']:.0f}"),
        ("server CPU use during the fan-out", f"{fan_cpu:.0%} of a core"),
        ("requests in the long run", f"{args.requests}"),
        (
            "first 1000 requests, mean (median)",
            f"{run['first_ms']:.2f} ({run['first_median_ms']:.2f}) ms",
        ),
        (
            "last 1000 requests, mean (median)",
            f"{run['last_ms']:.2f} ({run['last_median_ms']:.2f}) ms",
        ),
        ("last / first (mean)", f"{run['ratio']:.2f}"),
        ("server CPU use during the long run", f"{run_cpu:.0%} of a core"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|------:|")
    for label, value in rows:
        print(f"| {label:<{width}} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve() if args.serve else bench(args))


if __name__ == "__main__":
    main()
