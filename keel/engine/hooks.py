"""Lifecycle hooks: how the LLM gateway, approvals and tracing plug into the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.types import RunInfo, RunStatus, StepRecord, StructuredError


@dataclass(frozen=True, slots=True)
class StepEvent:
    run_id: str
    workflow: str
    key: str
    kind: str
    name: str
    record: StepRecord | None = None
    input: Any = None  # the step's arguments, when known (step_recorded of a final entry)


class Hooks:
    """Override any method; the engine calls them in order and never awaits user I/O twice.

    Example:
        class Log(keel.Hooks):
            def step_finished(self, ev): print(ev.key, ev.record.status)
        app.hooks.add(Log())
    """

    def run_started(self, run_id: str, workflow: str, resumed: bool) -> None: ...
    def run_suspended(self, run_id: str, workflow: str, waiting_on: list[str]) -> None: ...
    def run_finished(self, run_id: str, workflow: str, status: RunStatus) -> None: ...
    def step_started(self, ev: StepEvent) -> None: ...
    def step_finished(self, ev: StepEvent) -> None: ...
    def step_failed(self, ev: StepEvent) -> None: ...
    def step_replayed(self, ev: StepEvent) -> None: ...
    def map_progress(self, run_id: str, key: str, done: int, total: int) -> None: ...
    def step_retrying(self, ev: StepEvent, attempt: int, wake_at: float) -> None: ...
    def escalated(self, run_id: str, escalation_id: str, queue: str) -> None: ...
    def step_recorded(self, ev: StepEvent) -> None:
        """A journal entry (final or pending) is durable; `ev.record` is it."""

    def review_requested(self, review: dict[str, Any]) -> None:
        """A person was asked to decide (approval, low confidence, novelty, sample)."""

    def execution_started(self, run: RunInfo, resumed: bool) -> None:
        """This worker starts executing `run` from the top (replaying what is journaled)."""

    def execution_ended(
        self, run: RunInfo, status: RunStatus | None, error: StructuredError | None
    ) -> None:
        """The execution left the run `status` (None: abandoned or interrupted)."""


class HookSet(Hooks):
    """Fans each event out to every registered hook; a failing hook never fails a run."""

    def __init__(self) -> None:
        self._hooks: list[Hooks] = []
        # method name -> the bound methods of hooks that override it: events nobody
        # handles cost one dict lookup, not a call per hook.
        self._by_event: dict[str, list[Any]] = {}

    def add(self, hook: Hooks) -> None:
        self._hooks.append(hook)
        self._index()

    def remove(self, hook: Hooks) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)
            self._index()

    def _index(self) -> None:
        names = [n for n in vars(Hooks) if not n.startswith("_")]
        self._by_event = {
            n: [
                getattr(h, n)
                for h in self._hooks
                if getattr(type(h), n, None) is not getattr(Hooks, n)
            ]
            for n in names
        }

    def wants(self, method: str) -> bool:
        return bool(self._by_event.get(method))

    def _emit(self, method: str, *args: Any) -> None:
        for fn in self._by_event.get(method, ()):
            try:
                fn(*args)
            except Exception:  # observers must not break execution
                import logging

                logging.getLogger("keel.hooks").exception("hook %r failed in %s", fn, method)

    def run_started(self, run_id: str, workflow: str, resumed: bool) -> None:
        if self._hooks:
            self._emit("run_started", run_id, workflow, resumed)

    def run_suspended(self, run_id: str, workflow: str, waiting_on: list[str]) -> None:
        if self._hooks:
            self._emit("run_suspended", run_id, workflow, waiting_on)

    def run_finished(self, run_id: str, workflow: str, status: RunStatus) -> None:
        if self._hooks:
            self._emit("run_finished", run_id, workflow, status)

    def step_started(self, ev: StepEvent) -> None:
        if self._hooks:
            self._emit("step_started", ev)

    def step_finished(self, ev: StepEvent) -> None:
        if self._hooks:
            self._emit("step_finished", ev)

    def step_failed(self, ev: StepEvent) -> None:
        if self._hooks:
            self._emit("step_failed", ev)

    def step_replayed(self, ev: StepEvent) -> None:
        if self._hooks:
            self._emit("step_replayed", ev)

    def map_progress(self, run_id: str, key: str, done: int, total: int) -> None:
        if self._hooks:
            self._emit("map_progress", run_id, key, done, total)

    def step_retrying(self, ev: StepEvent, attempt: int, wake_at: float) -> None:
        if self._hooks:
            self._emit("step_retrying", ev, attempt, wake_at)

    def escalated(self, run_id: str, escalation_id: str, queue: str) -> None:
        if self._hooks:
            self._emit("escalated", run_id, escalation_id, queue)

    def review_requested(self, review: dict[str, Any]) -> None:
        if self._hooks:
            self._emit("review_requested", review)

    def execution_started(self, run: RunInfo, resumed: bool) -> None:
        if self._hooks:
            self._emit("execution_started", run, resumed)

    def execution_ended(
        self, run: RunInfo, status: RunStatus | None, error: StructuredError | None
    ) -> None:
        if self._hooks:
            self._emit("execution_ended", run, status, error)

    def step_recorded(self, ev: StepEvent) -> None:
        for fn in self._by_event.get("step_recorded", ()):
            try:
                fn(ev)
            except Exception:
                import logging

                logging.getLogger("keel.hooks").exception("hook %r failed in step_recorded", fn)

    @property
    def active(self) -> bool:
        return bool(self._hooks)
