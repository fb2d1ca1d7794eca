"""The Temporal workers serving an App's task queue, as Temporal sees them.

Temporal knows its workers only as pollers of a task queue (what `temporal task-queue
describe` shows): an identity, when it last polled, its rate limit. These are never
written to Keel's `workers` table: that table tells decisions whether Keel's engine
will resume a run, and a Temporal worker does not resume an engine run. A Keel worker
(`serve`) polls under an identity naming its host, pid and workflows (`identity`), so
`keel workers` can show them as it shows Keel's own.

Example:
    for w in await temporal_workers(app):
        print(w.host, w.pid, w.workflows, w.live(time.time()))
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.app import App
    from keel.store.records import WorkerBeat

# A poller counts as live while it polled this recently. An idle worker's long poll
# lasts up to a minute before it polls again, and Temporal keeps a stopped worker's
# poller listed for minutes, so a shorter window would hide idle workers.
LIVE_WITHIN = 90.0

# Temporal refuses a poll whose identity is over 1,000 characters (its default ID
# length limit): a worker hosting very many workflows names only the first ones.
_MAX_IDENTITY = 900

# temporalio's default identity is `pid@host`; Keel's adds ` keel[workflow,...]`.
_SHAPE = re.compile(r"^(\d+)@(\S+?)(?: keel\[(.*)\])?$")

_KINDS = ("workflow", "activity")  # the task types a worker polls


@dataclass(frozen=True)
class TemporalWorker:
    """A worker polling the App's task queue on Temporal (`keel workers` lists them).

    Example:
        live = [w for w in await temporal_workers(app) if w.live(time.time())]
    """

    identity: str  # as the worker told Temporal
    host: str | None  # parsed from a `pid@host` identity, else None
    pid: int | None
    task_queue: str
    polls: tuple[str, ...]  # the task types it polls: "workflow", "activity"
    workflows: tuple[str, ...]  # a Keel worker's, from its identity; else unknown: ()
    last_seen: float  # its last poll (epoch seconds)
    rate_per_second: float | None  # its activity rate limit, if it set one

    def live(self, now: float) -> bool:
        """Whether it polled recently enough at `now` to count as running."""
        return now - self.last_seen <= LIVE_WITHIN

    def as_json(self, now: float) -> dict[str, Any]:
        """Its `keel workers --json` row (`executor` says whose worker it is)."""
        return {
            "executor": "temporal",
            "identity": self.identity,
            "host": self.host,
            "pid": self.pid,
            "task_queue": self.task_queue,
            "polls": list(self.polls),
            "workflows": list(self.workflows),
            "last_seen": self.last_seen,
            "rate_per_second": self.rate_per_second,
            "live": self.live(now),
        }


def identity(workflows: Iterable[str]) -> str:
    """The identity a Keel worker polls under: temporalio's `pid@host`, then the
    workflows it hosts (as many as fit Temporal's limit, then `+N`).

    Example:
        Worker(client, task_queue=q, identity=identity(app.registry.workflows), ...)
    """
    head = f"{os.getpid()}@{socket.gethostname()}"
    names = sorted(workflows)
    shown: list[str] = []
    for i, name in enumerate(names):
        more = f"+{len(names) - i}"
        if len(head) + len(",".join([*shown, name, more])) + 7 > _MAX_IDENTITY:
            shown.append(more)
            break
        shown.append(name)
    return f"{head} keel[{','.join(shown)}]"


def parse_identity(text: str) -> tuple[str | None, int | None, tuple[str, ...]]:
    """`(host, pid, workflows)` from a poller's identity; None and () where it does not
    have temporalio's or Keel's shape (a worker that set its own).

    Example:
        assert parse_identity("41@web-1 keel[triage]") == ("web-1", 41, ("triage",))
    """
    m = _SHAPE.match(text)
    if m is None:
        return None, None, ()
    names = tuple(n for n in (m.group(3) or "").split(",") if n)
    return m.group(2), int(m.group(1)), names


async def temporal_workers(app: App) -> list[TemporalWorker]:
    """The workers polling `app`'s task queue on Temporal (workflow and activity tasks),
    live or not, the most recently seen first. Raises `keel.ConfigError` when the App
    has no backend or Temporal cannot be asked.

    Example:
        workers = await temporal_workers(keel.App(backend="temporal://localhost:7233"))
    """
    from keel.backends.temporal.remote import backend_of, client_for

    queue = backend_of(app).task_queue
    client = await client_for(app)
    try:
        found = await asyncio.gather(*(_pollers(client, queue, kind) for kind in _KINDS))
    except Exception as exc:  # an RPCError: no such namespace, no permission, ...
        raise ConfigError(
            f"cannot list the workers of task queue {queue!r} on Temporal at "
            f"{backend_of(app).address}: {exc}; check the address and namespace"
        ) from exc
    merged: dict[str, TemporalWorker] = {}
    for kind, pollers in zip(_KINDS, found, strict=True):
        for p in pollers:
            merged[p.identity] = _merge(merged.get(p.identity), p, kind, queue)
    return sorted(merged.values(), key=lambda w: -w.last_seen)


@dataclass(frozen=True)
class Listed:
    """Every worker `keel workers` and `/api/v1/workers` list: Keel's (heartbeats in its
    store, `keel.presence`) and, for an App on Temporal, those polling its task queue."""

    keel: list[WorkerBeat]
    temporal: list[TemporalWorker]
    task_queue: str | None  # the App's Temporal task queue; None on Keel's engine


async def listed_workers(app: App) -> Listed:
    """Keel's workers and, with a Temporal backend, Temporal's, live or not. Temporal's
    are asked of Temporal, never stored: Keel's `workers` table tells a decision whether
    Keel's engine resumes its run, which a Temporal worker never does.

    Example:
        listed = await listed_workers(app)
        print(len(listed.keel), len(listed.temporal))
    """
    from keel.presence import workers

    if app.backend is None:
        return Listed(await workers(app), [], None)
    return Listed(await workers(app), await temporal_workers(app), app.backend.task_queue)


async def _pollers(client: Any, queue: str, kind: str) -> list[Any]:
    """Temporal's pollers of one task type of `queue` (DescribeTaskQueue)."""
    from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    types = {
        "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    }
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=types[kind],
    )
    response = await client.workflow_service.describe_task_queue(request)
    return list(response.pollers)


def _merge(known: TemporalWorker | None, poller: Any, kind: str, queue: str) -> TemporalWorker:
    """One worker from its pollers of each task type (one identity, several types)."""
    seen = poller.last_access_time.ToMicroseconds() / 1e6
    # Temporal reports the activity rate limit a worker set; 100,000 means none
    rate = poller.rate_per_second if 0 < poller.rate_per_second < 100_000 else None
    if known is None:
        host, pid, workflows = parse_identity(poller.identity)
        return TemporalWorker(poller.identity, host, pid, queue, (kind,), workflows, seen, rate)
    return TemporalWorker(
        known.identity,
        known.host,
        known.pid,
        queue,
        (*known.polls, kind),
        known.workflows,
        max(known.last_seen, seen),
        known.rate_per_second if rate is None else rate,
    )


__all__ = [
    "LIVE_WITHIN",
    "Listed",
    "TemporalWorker",
    "identity",
    "listed_workers",
    "parse_identity",
    "temporal_workers",
]
