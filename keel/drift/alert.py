"""Drift alerts: a callable (sync or async) or a webhook URL told when a monitor starts
or stops alerting; like review notifications (keel.hitl.notify), sent in the
background, never holding up or failing a run, failures logged."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("keel.drift")

AlertTarget = Callable[[dict[str, Any]], Any] | str


class Alerts:
    """Sends `{"event": "drift.alert" | "drift.recovered", "workflow", "monitor",
    "status", "statistic", "threshold", "p_value", "window", "detail"}` to each target.

    Example:
        app.drift.on_alert("https://hooks.example.com/drift")
        app.drift.on_alert(lambda event: print(event["monitor"], event["statistic"]))
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.targets: list[AlertTarget] = []
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, target: AlertTarget) -> None:
        if not (callable(target) or (isinstance(target, str) and target.startswith("http"))):
            raise TypeError(f"a drift alert target is a callable or an http(s) URL, not {target!r}")
        self.targets.append(target)

    def send(self, event: dict[str, Any]) -> None:
        """Queue `event` for every target; returns at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for target in self.targets:
            task = loop.create_task(self._send(target, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, target: AlertTarget, event: dict[str, Any]) -> None:
        try:
            if isinstance(target, str):
                await asyncio.wait_for(
                    asyncio.to_thread(self._post, target, event), self.timeout + 1
                )
            else:
                out = target(event)
                if inspect.isawaitable(out):
                    await asyncio.wait_for(out, self.timeout)
        except Exception as exc:  # an alert must never hold up or fail a run
            log.warning(
                "drift alert for %s/%s failed: %s", event.get("workflow"), event.get("monitor"), exc
            )

    def _post(self, url: str, event: dict[str, Any]) -> None:
        body = json.dumps(event, default=str).encode()
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
