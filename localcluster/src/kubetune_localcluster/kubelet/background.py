"""Work the kubelet starts and does not wait for (an event to post, a pod to stop or delete):
stop() waits for what is left of it, and a failure is logged rather than lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


def log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("kubelet: %s failed", task.get_name(), exc_info=task.exception())


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    async def wait(self) -> None:
        """Wait for every task started so far to end."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
