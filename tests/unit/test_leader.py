"""The lease elector's state machine (kubetune.k8s.leader) against a fake clock and an
in-memory lease store that refuses stale writes as the API server does: who may take the
lease and when, the fence, losing it, and releasing it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from kubetune.k8s.leader import LeaseConflictError, LeaseElector, LeaseRecord, NotLeadingError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Store:
    """One lease; updates must carry its current resourceVersion."""

    def __init__(self) -> None:
        self.lease: LeaseRecord | None = None
        self.version = 0
        self.down = False

    def _bump(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.lease = replace(record, resource_version=str(self.version))
        return self.lease

    async def get(self) -> LeaseRecord | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        return self.lease

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        if self.lease is not None:
            raise LeaseConflictError("exists")
        return self._bump(record)

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        if self.down:
            raise ConnectionError("API server unreachable")
        if self.lease is None or record.resource_version != self.lease.resource_version:
            raise LeaseConflictError("stale")
        return self._bump(record)


def elector(store: Store, clock: Clock, identity: str) -> LeaseElector:
    return LeaseElector(
        store,
        identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        clock=clock,
        wall=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        sleep=clock.sleep,
    )


async def test_the_first_candidate_takes_a_free_lease_and_the_second_waits_for_its_expiry() -> None:
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew()
    assert a.holds()
    assert not await b.try_acquire_or_renew()
    assert not b.holds()
    # b times the lease from when it saw the record change, by its own clock.
    clock.now += 14.9
    assert not await b.try_acquire_or_renew()
    clock.now += 0.2
    assert await b.try_acquire_or_renew()
    assert store.lease is not None
    assert (store.lease.holder, store.lease.transitions) == ("b", 1)


async def test_a_renew_restarts_the_observers_wait() -> None:
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.now += 10
    assert await a.try_acquire_or_renew()  # renewed: the record changed
    clock.now += 6  # 16 s since b first saw the lease; b sees the renewed record now
    assert not await b.try_acquire_or_renew()
    clock.now += 14.9
    assert not await b.try_acquire_or_renew()
    clock.now += 0.2
    assert await b.try_acquire_or_renew()


async def test_the_fence_closes_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    store, clock = Store(), Clock()
    a = elector(store, clock, "a")
    assert await a.try_acquire_or_renew()
    clock.now += 9.9
    a.fence()
    clock.now += 0.2  # frozen past the renew deadline (SIGSTOP): no write, not even one
    assert not a.holds()
    with pytest.raises(NotLeadingError, match="no longer holds the lease"):
        a.fence()


async def test_a_leader_that_cannot_renew_stops_leading_within_the_renew_deadline() -> None:
    store, clock = Store(), Clock()
    a = elector(store, clock, "a")
    await a.acquire()
    started = clock.now
    store.down = True
    await a.keep_renewing()
    assert not a.holds()
    assert started + 10 <= clock.now <= started + 10 + 2


async def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew()
    clock.now += 20  # a frozen past the lease; b takes it
    assert not await b.try_acquire_or_renew()  # b first sees the record now
    clock.now += 16
    assert await b.try_acquire_or_renew()
    assert not await a.try_acquire_or_renew()
    assert not a.holds()


async def test_of_two_candidates_that_read_a_free_lease_only_one_takes_it() -> None:
    """Each writes conditional on the version it read: the second write is refused."""
    store, clock = Store(), Clock()
    first = elector(store, clock, "first")
    assert await first.try_acquire_or_renew()
    assert await first.release()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(won) == [False, True]
    assert [e.holds() for e in (a, b)] == list(won)
    assert store.lease is not None
    assert store.lease.holder in ("a", "b")


async def test_a_released_lease_is_taken_at_the_next_try() -> None:
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    assert not a.holds()
    assert store.lease is not None
    assert store.lease.duration_seconds == 1
    assert await b.try_acquire_or_renew()


async def test_acquire_retries_with_jitter_until_the_lease_is_free() -> None:
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew()
    started = clock.now
    await b.acquire()
    assert b.holds()
    # Expired 15 s after b first saw it; b tries every 2 to 4.4 s.
    assert started + 15 <= clock.now <= started + 15 + 4.4


def test_durations_that_leave_no_margin_are_refused() -> None:
    with pytest.raises(ValueError, match="--leader-elect-lease-duration"):
        LeaseElector(Store(), "a", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="--leader-elect-retry-period"):
        LeaseElector(Store(), "a", lease_duration=15, renew_deadline=4, retry_period=4)
