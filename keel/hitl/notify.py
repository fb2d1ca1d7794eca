"""Notification of new review requests: a callable or a webhook; never blocks a run.

What leaves the process is the request as the App's redactor renders it: a webhook,
a chat message or a pager never carries a secret."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

from keel.engine.hooks import Hooks

log = logging.getLogger("keel.hitl")


class Notifier(Hooks):
    """Calls `target(review)` (sync or async) or POSTs the review as JSON to a URL; the
    review as `redact` renders it (the App's `redactor.value`)."""

    def __init__(
        self,
        target: Callable[[dict[str, Any]], Any] | str,
        timeout: float = 5.0,
        *,
        redact: Callable[[Any], Any],
    ):
        self.target = target
        self.timeout = timeout
        self.redact = redact
        self._tasks: set[asyncio.Task[None]] = set()

    def review_requested(self, review: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        shown: dict[str, Any] = self.redact(review)
        task = loop.create_task(self._send(shown))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, review: dict[str, Any]) -> None:
        try:
            if isinstance(self.target, str):
                await asyncio.wait_for(asyncio.to_thread(self._post, review), self.timeout + 1)
            else:
                out = self.target(review)
                if inspect.isawaitable(out):
                    await asyncio.wait_for(out, self.timeout)
        except Exception as exc:  # a notification must never hold up or fail a run
            log.warning("notifying about review %s failed: %s", review.get("id"), exc)

    def _post(self, review: dict[str, Any]) -> None:
        assert isinstance(self.target, str)
        body = json.dumps({"event": "review.requested", "review": review}, default=str).encode()
        req = urllib.request.Request(
            self.target, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
