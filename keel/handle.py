"""Starting runs: the ids they get, the input they are started with, `RunHandle`, and
waiting for a run to settle (`wait_run`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError

from keel._ids import id_problem
from keel.engine.serde import from_json, revive, to_json
from keel.errors import ConfigError, InputError, RunCancelled, RunFailed, RunSuspended
from keel.types import RunInfo, RunStatus

if TYPE_CHECKING:
    from keel.app import App
    from keel.engine.registry import WorkflowDef
    from keel.engine.worker import Worker


def input_json(wf: WorkflowDef, input: Any) -> bytes:
    """A start's input validated against the workflow's signature, as stored JSON."""
    validated = wf.validate_input(input)
    try:
        dumped = validated.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise InputError(
            f"input for workflow {wf.name!r} cannot be stored as JSON: {exc}. "
            "Pass JSON data (dict, list, str, int, float, bool, None) or Pydantic models.",
            workflow=wf.name,
        ) from None
    return to_json(dumped, what="input")


def same_input(info: RunInfo, data: bytes, render: Callable[[Any], str]) -> None:
    """An existing run started again must be asked for with the input it has
    (`render` shows both, redacted, when it is not)."""
    given = from_json(data)
    if given == info.input:
        return
    recorded, now = render(info.input), render(given)
    raise InputError(
        f"run id {info.id!r} already exists ({info.workflow}, {info.status.value}) with "
        f"different input: recorded {recorded}, given {now}. Starting an id again "
        "resumes it only with the same input (or none); pick a new id for new input.",
        run_id=info.id,
        recorded_input=recorded,
        new_input=now,
    )


def same_session(info: RunInfo, session: str | None) -> None:
    """An existing run started again with a session must be asked for with its own: a
    run's session is fixed when it starts."""
    if session is not None and session != info.session:
        raise InputError(
            f"run {info.id!r} belongs to session {info.session!r}, not {session!r}; a run's"
            " session is fixed when it starts: start another id for this session",
            run_id=info.id,
        )


async def record_run(
    app: App,
    wf: WorkflowDef,
    input: Any,
    run_id: str | None,
    tenant: str | None,
    session: str | None,
) -> tuple[RunInfo, bool]:
    """`App.start`'s record: the run created (True), or the one `run_id` already names
    when this start is the same as its first one (False); bad ids and a different input,
    session or workflow are refused."""
    problem = None if run_id is None else id_problem(run_id, "run id")
    problem = problem or (None if session is None else id_problem(session, "session id"))
    if problem is not None:
        raise InputError(problem, run_id=run_id, session=session)
    rid = run_id or new_run_id()
    existing = await app.store.get_run(rid) if run_id else None
    data = b""
    if existing is not None and input is None:  # attach: the first start's input stands
        info, created = existing, False
    else:
        data = input_json(wf, input)
        if existing is not None:
            info, created = existing, False
        else:
            info, created = await app.store.create_run(
                rid, wf.name, data, time.time(), tenant=tenant, session=session or rid
            )
    if not created and info.workflow != wf.name:
        raise ConfigError(
            f"run id {rid!r} already belongs to workflow {info.workflow!r}, "
            f"not {wf.name!r}; pick another id",
            run_id=rid,
        )
    if not created and input is not None:
        same_input(info, data, app._short_redacted)
    if not created:
        same_session(info, session)
    return info, created


def outcome(app: App, info: RunInfo) -> Any:
    """A finished run's result (revived as its workflow's return type), or the error
    that ended it: `RunCancelled`, `RunFailed` naming the error and its step."""
    if info.status is RunStatus.SUCCEEDED:
        wf = app.registry.workflows.get(info.workflow)
        return revive(info.result, wf.return_type) if wf else info.result
    if info.status is RunStatus.CANCELLED:
        raise RunCancelled(f"run {info.id} was cancelled", run_id=info.id)
    err = info.error
    msg = f"run {info.id} ({info.workflow}) failed"
    if err is not None:
        msg += f": {err.type}: {err.message}"
        if err.step:
            msg += f" [step {err.step}]"
    raise RunFailed(msg, error=err, run_id=info.id)


def new_run_id() -> str:
    return f"run_{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


class RunHandle:
    """A started run.

    Example:
        handle = await app.start(triage, {"ticket": t})
        outcome = await handle.result()
    """

    def __init__(self, app: App, run_id: str, workflow: str, known: RunInfo | None = None) -> None:
        self.app = app
        self.id = run_id
        self.workflow = workflow
        # The run as `App.start` created it (PENDING), spared one read by the first wait.
        self._known = known

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} ({self.workflow})>"

    async def info(self) -> RunInfo:
        return await self.app.get_run(self.id)

    async def status(self) -> RunStatus:
        return (await self.info()).status

    async def settle(self, timeout: float | None = None) -> RunInfo:
        """Wait until the run is WAITING or finished (not PENDING/RUNNING)."""
        return await self.app._wait(self.id, lambda s: s not in _ACTIVE, timeout, self._first())

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish; return its result or raise `RunFailed`/`RunCancelled`."""
        info = await self.app._wait(self.id, lambda s: s.terminal, timeout, self._first())
        return self.app._outcome(info)

    def _first(self) -> RunInfo | None:
        # Only the first wait: later, the run may have moved on without this handle.
        known, self._known = self._known, None
        return known

    async def signal(self, name: str, payload: Any = None, *, queue: bool = False) -> bool:
        """`App.signal` for this run."""
        return await self.app.signal(self.id, name, payload, queue=queue)

    async def cancel(self) -> RunInfo:
        return await self.app.cancel(self.id)


_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)

# The longest gap between two reads of a run a caller waits for (`wait_run`), and the
# gap while it is queued behind this process's busy worker: then it is almost always
# executed here (and settles without a read), so a read is only a safety net for a run
# another host took; a thousand queued waiters polling fast would slow the worker.
_POLL_MAX = 0.5
_POLL_QUEUED = 2.0


async def wait_run(
    app: App,
    run_id: str,
    done: Callable[[RunStatus], bool],
    timeout: float | None,
    known: RunInfo | None = None,
) -> RunInfo:
    """Run `run_id` of `app` once `done(status)` (`known`: the run as `App.start`
    created it, not read again before the first wait). The embedded worker on this loop
    says when a run it executes settles (`App._settled`), so while it holds the run
    nothing is read; the store is polled (20 ms doubling to 0.5 s; 2 s while that
    worker is busy with others) for runs executed elsewhere or not yet claimed.

    Example:
        >>> info = await wait_run(app, run_id, lambda s: s.terminal, 30.0)  # doctest: +SKIP
    """
    if app.backend is not None:  # Temporal says when its runs end (keel.backends.temporal)
        from keel.backends.temporal.runs import wait

        return await wait(app, run_id, done, timeout)
    return await poll_run(app, run_id, done, timeout, known)


async def poll_run(
    app: App,
    run_id: str,
    done: Callable[[RunStatus], bool],
    timeout: float | None,
    known: RunInfo | None = None,
) -> RunInfo:
    """`wait_run` on Keel's store: the embedded worker's word, else polling."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    poll = 0.02
    info = known if known is not None else await app.get_run(run_id)
    stale = known is not None  # not read here: what start() saw, or reads skipped
    read_at = loop.time()
    if not done(info.status) and app._worker is not None and app._worker_loop is loop:
        app._worker.watch(run_id)
    while not done(info.status):
        worker = app._worker if app._worker_loop is loop else None
        if worker is not None and worker.fault is not None:
            raise worker.fault  # the run is intact, but nothing here can execute it
        if deadline is not None and loop.time() >= deadline:
            if stale:  # say what it is now
                info = await app.get_run(run_id)
                if done(info.status):
                    break
            if info.status is RunStatus.WAITING:
                raise RunSuspended(
                    f"run {run_id} is WAITING for {', '.join(info.waiting_on) or 'a timer'}",
                    run_id=run_id,
                )
            raise TimeoutError(f"run {run_id} is still {info.status.value} after {timeout}s")
        fut: asyncio.Future[RunStatus] = loop.create_future()
        app._waiters.setdefault(run_id, []).append(fut)
        wait = poll if deadline is None else max(0.0, min(poll, deadline - loop.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, wait)
        poll = min(poll * 2, _POLL_MAX)
        settled = fut.done() and not fut.cancelled()  # wait_for cancels it on timeout
        if not settled:
            _unwait(app, run_id, fut)
            if worker is not None and _held(worker, run_id, loop.time() - read_at):
                stale = True
                continue
        info, stale, read_at = await app.get_run(run_id), False, loop.time()
    return info


def _held(worker: Worker, run_id: str, unread: float) -> bool:
    """True when reading the run now would say nothing new: it executes here, and settles
    through `App._settled` (once it leaves `active` without settling, after a fault,
    reads resume); or it is queued behind the runs this busy worker executes, and has been
    read in the last `_POLL_QUEUED` seconds."""
    if run_id in worker.active:
        return True
    return bool(worker.active) and worker.paused is None and unread < _POLL_QUEUED


def _unwait(app: App, run_id: str, fut: asyncio.Future[RunStatus]) -> None:
    # A wait that timed out: its future goes, so a long wait does not pile them up.
    futs = app._waiters.get(run_id, [])
    with contextlib.suppress(ValueError):
        futs.remove(fut)
    if not futs:
        app._waiters.pop(run_id, None)
