"""Waiting in tests for what happens in its own time (a controller, a process, a scrape): poll
a check until it holds, and on timeout fail saying what was awaited and what was last seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class _Tries:
    """The deadline and the last outcome of one wait, and the failure that reports them."""

    def __init__(self, timeout: float, message: str) -> None:
        self.timeout = timeout
        self.message = message
        self.deadline = time.monotonic() + timeout
        self.last_value: object = None
        self.last_error: AssertionError | None = None

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> AssertionError:
        awaited = self.message or "the condition"
        if self.last_error is not None:
            seen = f"last failed check: {self.last_error}"
        else:
            seen = f"last value: {self.last_value!r}"
            if self.last_value is None:
                seen += " (a check that asserts returns a truthy value once it passes)"
        return AssertionError(f"{awaited} not reached in {self.timeout} s; {seen}")


def eventually(
    check: Callable[[], T], *, timeout: float, interval: float = 0.1, message: str = ""
) -> T:
    """Call `check` every `interval` seconds until it returns a truthy value, and return it; a
    check that asserts is retried while it raises AssertionError. Any other exception ends the
    wait at once. After `timeout` seconds it fails with `message` and the last value or
    assertion seen."""
    tries = _Tries(timeout, message)
    while True:
        try:
            value = check()
        except AssertionError as error:
            tries.last_error = error
        else:
            if value:
                return value
            tries.last_value, tries.last_error = value, None
        if tries.over():
            raise tries.failure() from tries.last_error
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """`eventually` for a coroutine check, sleeping without blocking the event loop (where the
    embedded cluster under test may be running)."""
    tries = _Tries(timeout, message)
    while True:
        try:
            value = await check()
        except AssertionError as error:
            tries.last_error = error
        else:
            if value:
                return value
            tries.last_value, tries.last_error = value, None
        if tries.over():
            raise tries.failure() from tries.last_error
        await asyncio.sleep(interval)
