"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's meaning
(tools/leaderelection): a candidate takes the lease when it is free or when its record has not
changed for leaseDurationSeconds by the candidate's own monotonic clock; the leader renews it
every retry period; a leader that has not renewed within the renew deadline stops leading.

`LeaseElector.holds` is the fence of the write path: it is true only while the last successful
renew began less than the renew deadline ago by the local monotonic clock, which also runs
while the process is frozen (SIGSTOP), so a replica that wakes after its lease ran out refuses
to write before it has even looked at the lease. The renew deadline is shorter than the lease
duration, so the fence closes before any other candidate may take the lease.

The `kubernetes` client's own kubernetes.leaderelection is not used: it times the lease by the
wall clock (time.time), runs blocking threads, has no fence and does not release on shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import socket
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import kubernetes
from aiohttp import web

from kubetune.kubeconfig import connect

logger = logging.getLogger("kubetune.leader")

JITTER_FACTOR: Final = 1.2
"""client-go's JitterFactor: a candidate waits retry period to 2.2 retry periods between tries,
so candidates started together do not keep colliding."""


class NotLeadingError(RuntimeError):
    """A write was refused: this replica does not hold the lease (any more)."""


class LeaseConflictError(Exception):
    """The lease changed since it was read (409), or someone else created it first."""


@dataclass(frozen=True)
class LeaseRecord:
    """The lease's spec as the election reads and writes it, and its resourceVersion."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str | None = None


class LeaseStore(Protocol):
    """Where the lease lives: the API server, or a fake in the tests."""

    async def get(self) -> LeaseRecord | None: ...

    async def create(self, record: LeaseRecord) -> LeaseRecord: ...

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        """Replace the lease, conditional on record.resource_version (LeaseConflictError if not)."""
        ...


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """hostname_uuid, as Kubernetes components name their candidacy: unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def check_timing(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """client-go's checks: the fence must close before anyone may take the lease, and a
    leader must have time for more than one renew try."""
    if not lease_duration > renew_deadline:
        raise ValueError(
            f"--leader-elect-lease-duration ({lease_duration:g}) must be greater than "
            f"--leader-elect-renew-deadline ({renew_deadline:g})"
        )
    if not renew_deadline > JITTER_FACTOR * retry_period:
        raise ValueError(
            f"--leader-elect-renew-deadline ({renew_deadline:g}) must be greater than "
            f"{JITTER_FACTOR:g} x --leader-elect-retry-period ({retry_period:g})"
        )


class LeaseElector:
    """One candidate's view of the lease. `clock` is monotonic seconds, `wall` the times
    written into the lease for people to read (the election never compares them)."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        check_timing(lease_duration, renew_deadline, retry_period)
        self.store = store
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # when the last successful write of it began

    def holds(self) -> bool:
        """This replica leads: its last renew began less than the renew deadline ago."""
        return self._renewed_at is not None and self._clock() < (
            self._renewed_at + self.renew_deadline
        )

    def fence(self) -> None:
        """Raise NotLeadingError unless this replica still holds the lease: before each write."""
        if not self.holds():
            raise NotLeadingError(f"{self.identity} no longer holds the lease: not writing")

    async def try_acquire_or_renew(self) -> bool:
        """One try, as client-go's tryAcquireOrRenew: True when this replica holds the lease
        after it."""
        started = self._clock()
        now = micro_time(self._wall())
        try:
            current = await self.store.get()
        except Exception as error:  # the API may be away for a while: try again later
            logger.warning("could not read the lease: %s", error)
            return False
        try:
            if current is None:
                written = await self.store.create(
                    LeaseRecord(self.identity, int(self.lease_duration), now, now, 0)
                )
            else:
                # Any write of the lease (a new resourceVersion) restarts the wait: a renew.
                if current != self._observed:
                    self._observed, self._observed_at = current, started
                held_by_other = current.holder not in ("", self.identity)
                if held_by_other and started < self._observed_at + self.lease_duration:
                    if self._renewed_at is not None:
                        logger.error("%s: the lease is held by %s", self.identity, current.holder)
                        self._renewed_at = None  # taken over: stop writing at once
                    return False
                mine = current.holder == self.identity
                written = await self.store.update(
                    replace(
                        current,
                        holder=self.identity,
                        duration_seconds=int(self.lease_duration),
                        acquire_time=current.acquire_time if mine else now,
                        renew_time=now,
                        transitions=current.transitions + (0 if mine else 1),
                    )
                )
        except LeaseConflictError:
            return False
        except Exception as error:
            logger.warning("could not write the lease: %s", error)
            return False
        self._observed, self._observed_at = written, started
        self._renewed_at = started
        return True

    def _jittered(self) -> float:
        return self.retry_period * (1 + random.random() * JITTER_FACTOR)

    async def acquire(self) -> None:
        """Wait until this replica holds the lease."""
        logger.info("%s is a candidate for the lease", self.identity)
        while not await self.try_acquire_or_renew():
            await self._sleep(self._jittered())
        logger.info("%s acquired the lease", self.identity)

    async def keep_renewing(self) -> None:
        """Renew every retry period while leading; returns when leadership is lost (the
        renew deadline passed without a successful renew)."""
        while True:
            await self._sleep(self.retry_period)
            while self.holds():
                deadline = (self._renewed_at or 0.0) + self.renew_deadline
                try:
                    renewed = await asyncio.wait_for(
                        self.try_acquire_or_renew(), timeout=max(0.0, deadline - self._clock())
                    )
                except TimeoutError:
                    renewed = False
                if renewed:
                    break
                await self._sleep(self.retry_period)
            if not self.holds():
                logger.error("%s lost the lease", self.identity)
                return

    async def release(self) -> bool:
        """Give the lease up (client-go's ReleaseOnCancel), so that a standby takes it at
        its next try instead of waiting for it to expire. True when released."""
        if not self.holds() or self._observed is None:
            return False
        now = micro_time(self._wall())
        try:
            self._observed = await self.store.update(
                replace(
                    self._observed, holder="", duration_seconds=1, acquire_time=now, renew_time=now
                )
            )
        except Exception as error:
            logger.warning("could not release the lease: %s", error)
            return False
        self._renewed_at = None
        logger.info("%s released the lease", self.identity)
        return True


class KubeLeaseStore:
    """A Lease in the API server, through the `kubernetes` client (in a thread of its own)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
        self.api = kubernetes.client.CoordinationV1Api(client)
        self.namespace = namespace
        self.name = name
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kubetune-lease")

    @classmethod
    def from_environment(cls, namespace: str, name: str) -> KubeLeaseStore:
        """$KUBECONFIG, else in a pod the service account, else ~/.kube/config."""
        return cls(connect().api_client, namespace, name)

    async def _call(self, function: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function)

    @staticmethod
    def _record(lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=lease["metadata"]["resourceVersion"],
        )

    def _body(self, record: LeaseRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record.resource_version is not None:
            metadata["resourceVersion"] = record.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder or None,
                "leaseDurationSeconds": record.duration_seconds,
                "acquireTime": record.acquire_time,
                "renewTime": record.renew_time,
                "leaseTransitions": record.transitions,
            },
        }

    def _loaded(self, response: Any) -> LeaseRecord:
        return self._record(json.loads(response.data))

    async def get(self) -> LeaseRecord | None:
        try:
            response = await self._call(
                lambda: self.api.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False
                )
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return self._loaded(response)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        body: Any = self._body(replace(record, resource_version=None))  # dicts serve as V1Lease
        try:
            response = await self._call(
                lambda: self.api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False
                )
            )
        except kubernetes.client.ApiException as error:
            if error.status == 409:
                raise LeaseConflictError(
                    f"lease {self.name} was created by someone else"
                ) from error
            raise
        return self._loaded(response)

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        body: Any = self._body(record)
        try:
            response = await self._call(
                lambda: self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _preload_content=False
                )
            )
        except kubernetes.client.ApiException as error:
            if error.status in (404, 409):
                raise LeaseConflictError(f"lease {self.name} changed since it was read") from error
            raise
        return self._loaded(response)


LOST_EXIT_CODE: Final = 1
"""The exit status when leadership is lost: the pod restarts as a candidate."""


async def _serve_standby_liveness(endpoint: str) -> web.AppRunner:
    """Answer the liveness URL while a candidate (kopf serves it once leading): a standby is
    alive, and the kubelet must not restart it for waiting."""
    url = urllib.parse.urlsplit(endpoint)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app = web.Application()
    app.router.add_get(url.path or "/", alive)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, url.hostname, url.port or 80, reuse_address=True).start()
    return runner


async def lead(
    elector: LeaseElector,
    operate: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    liveness: str | None = None,
) -> int:
    """controller-runtime's way: a candidate until the lease is won, then `operate(stop)`
    (kopf) while the lease is renewed. A clean shutdown (SIGTERM, SIGINT) before or after
    that releases the lease and returns 0; losing the lease ends the process at once with
    LOST_EXIT_CODE (the fence already refuses every write; nothing waits for kopf)."""
    loop = asyncio.get_running_loop()
    # Set by a signal until kopf installs its own handlers (which stop kopf the same way).
    stop = asyncio.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    standby = await _serve_standby_liveness(liveness) if liveness else None
    acquiring = asyncio.create_task(elector.acquire())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if standby is not None:
            await standby.cleanup()  # kopf serves the same port from now on
    if not acquiring.done():
        acquiring.cancel()
        return 0
    operating = asyncio.create_task(operate(stop))
    renewing = asyncio.create_task(elector.keep_renewing())
    await asyncio.wait({operating, renewing}, return_when=asyncio.FIRST_COMPLETED)
    if renewing.done():
        logger.critical("leader election lost: exiting so that the pod restarts as a candidate")
        logging.shutdown()
        os._exit(LOST_EXIT_CODE)
    renewing.cancel()
    await elector.release()
    operating.result()  # kopf's own error, if it ended with one
    return 0
