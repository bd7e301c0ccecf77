"""How soon a study whose reconcile keeps failing is tried again, and when to say so.

A failing reconcile is retried after 5 s, then 10, 20, ... up to 5 minutes, so one broken
study costs the operator a few calls an hour instead of one every 5 s forever. Success or a
new spec generation (the author fixed something) starts over. Each distinct error is shown
once (an event and the study's ReconcileFailed condition), not at every retry.

Pure: no kopf, no client. `kubetune.handlers` keeps one per study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FIRST_RETRY_SECONDS: Final = 5.0
MAX_RETRY_SECONDS: Final = 300.0


@dataclass
class Backoff:
    """The failures of one study's reconciles since its last success or spec change."""

    failures: int = 0
    generation: int | None = None
    """The spec generation the failures happened at."""
    last_error: str | None = None

    def failed(self, error: str, generation: int | None) -> tuple[float, bool]:
        """Record a failure: the seconds to wait before the next try, and whether `error`
        differs from the previous failure's (then it is shown to the user)."""
        if generation != self.generation:
            self.failures, self.last_error = 0, None
        self.generation = generation
        self.failures += 1
        is_new = error != self.last_error
        self.last_error = error
        delay = FIRST_RETRY_SECONDS * 2 ** min(self.failures - 1, 16)
        return min(delay, MAX_RETRY_SECONDS), is_new

    def succeeded(self) -> None:
        self.failures, self.last_error = 0, None

    def holds(self, generation: int | None) -> bool:
        """Whether a retry should wait out its delay: the study failed, and its spec has not
        changed since (events on its trials and pods do not cut the wait short)."""
        return self.failures > 0 and generation == self.generation


def first_line(error: BaseException) -> str:
    """What a condition and an event say of an error: its type and first line, cut short."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    # The client's ApiException starts with a bare "(500)"; its next line says "Reason: ...".
    line = " ".join(lines[:2]) if lines and len(lines[0]) < 12 else (lines or [""])[0]
    line = line[:500]
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
