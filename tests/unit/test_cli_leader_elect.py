"""`kubetune operator --leader-elect`: flags that cannot work are refused before anything
starts, naming the flag and what to change."""

from __future__ import annotations

from typer.testing import CliRunner

from kubetune.cli import app


def operator(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["operator", "--metrics-port", "0", *args])
    return result.exit_code, result.output


def test_leader_election_and_kopf_peering_are_not_given_together() -> None:
    code, output = operator("--leader-elect", "--peering", "kubetune")
    assert code == 2
    assert "--leader-elect replaces kopf peering" in output


def test_a_renew_deadline_not_shorter_than_the_lease_is_refused() -> None:
    code, output = operator(
        "--leader-elect",
        "--leader-elect-lease-duration",
        "10",
        "--leader-elect-renew-deadline",
        "10",
    )
    assert code == 2
    assert "--leader-elect-lease-duration (10) must be greater than" in output


def test_a_retry_period_too_long_for_the_renew_deadline_is_refused() -> None:
    code, output = operator("--leader-elect", "--leader-elect-retry-period", "9")
    assert code == 2
    assert "--leader-elect-retry-period (9)" in output
