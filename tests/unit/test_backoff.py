"""A failing study's retries: 5 s doubling to 5 minutes, reset by success or a spec change,
and each distinct error shown once."""

from __future__ import annotations

import kubernetes

from kubetune.k8s.backoff import MAX_RETRY_SECONDS, Backoff, first_line


def test_retries_double_from_5_s_to_a_cap_of_5_minutes() -> None:
    backoff = Backoff()
    delays = [backoff.failed("ValueError: boom", generation=1)[0] for _ in range(12)]
    assert delays[:7] == [5, 10, 20, 40, 80, 160, 300]
    assert set(delays[6:]) == {MAX_RETRY_SECONDS}


def test_each_distinct_error_is_shown_once() -> None:
    backoff = Backoff()
    shown = [
        backoff.failed(error, generation=1)[1]
        for error in ["A: one", "A: one", "A: one", "B: two", "B: two", "A: one"]
    ]
    assert shown == [True, False, False, True, False, True]


def test_success_or_a_new_generation_starts_over() -> None:
    backoff = Backoff()
    for _ in range(5):
        backoff.failed("A: one", generation=1)
    assert backoff.holds(1)
    assert not backoff.holds(2)  # the author changed the spec: try it at once
    assert backoff.failed("A: one", generation=2) == (5, True)
    backoff.succeeded()
    assert not backoff.holds(2)
    assert backoff.failed("A: one", generation=2) == (5, True)


def test_the_first_line_of_an_api_error_says_its_status_and_reason() -> None:
    error = kubernetes.client.ApiException(status=422, reason="Unprocessable Entity")
    assert first_line(error) == "ApiException: (422) Reason: Unprocessable Entity"
    assert first_line(OverflowError("int too large\nat line 3")) == "OverflowError: int too large"
    assert first_line(KeyError()) == "KeyError"
