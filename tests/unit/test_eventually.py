"""The tests' one way to wait: `eventually` returns what the check found, retries a check that
asserts, and on timeout says what was awaited and what it last saw."""

from __future__ import annotations

import itertools

import pytest

from tests.eventually import eventually, eventually_async


def test_it_returns_the_first_truthy_value() -> None:
    values = iter([0, [], {"phase": "Running"}, {"phase": "later"}])
    assert eventually(lambda: next(values), timeout=5, interval=0.001) == {"phase": "Running"}


def test_a_check_that_asserts_is_retried_until_it_passes() -> None:
    calls = itertools.count()

    def check() -> int:
        count = next(calls)
        assert count >= 2, f"only {count} calls"
        return count

    assert eventually(check, timeout=5, interval=0.001) == 2


def test_on_timeout_it_names_what_was_awaited_and_the_last_value() -> None:
    values = itertools.count()
    with pytest.raises(AssertionError) as failure:
        eventually(lambda: -next(values) > 0, timeout=0.05, interval=0.001, message="a positive")
    assert str(failure.value).startswith("a positive not reached in 0.05 s; last value: False")


def test_on_timeout_it_gives_the_last_failed_assertion() -> None:
    def check() -> bool:
        raise AssertionError("phase is Pending")

    with pytest.raises(AssertionError, match=r"the pod Running .*: phase is Pending"):
        eventually(check, timeout=0.02, interval=0.001, message="the pod Running")


def test_another_exception_ends_the_wait_at_once() -> None:
    def check() -> bool:
        raise KeyError("status")

    with pytest.raises(KeyError):
        eventually(check, timeout=60, interval=0.001)


async def test_the_async_variant_awaits_the_check() -> None:
    values = iter([None, "", "ready"])

    async def check() -> str | None:
        return next(values)

    assert await eventually_async(check, timeout=5, interval=0.001) == "ready"


async def test_the_async_variant_names_the_last_value_on_timeout() -> None:
    async def check() -> list[str]:
        return []

    with pytest.raises(AssertionError, match=r"the events not reached in 0.02 s; last value: \[\]"):
        await eventually_async(check, timeout=0.02, interval=0.001, message="the events")
