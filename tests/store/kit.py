"""What the conformance tests share: records to write and the calls that take a time.

Lease expiry and timer due-ness come from the store's own clock (`await store.now()`),
so no test passes a worker's time for them: `claim`, `renew` and the run transitions go
through the wrappers here, which pass the database's `now` where a method still takes
one (for the times it records, e.g. `created_at`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from keel.store import Store
from keel.store.records import StepWrite, Usage
from keel.store.unit import Committed, UnitOfWork
from keel.types import (
    Escalation,
    ReviewRequest,
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
)

LEASE = 30.0  # long enough that no lease taken in a test expires by itself
WF = ("wf",)


async def _with_now(store: Store, method: str, kwargs: dict[str, Any]) -> Any:
    fn = getattr(store, method)
    if "now" in inspect.signature(fn).parameters and "now" not in kwargs:
        kwargs["now"] = await store.now()
    return await fn(**kwargs)


def rec(run_id: str, key: str, pos: int = 0, at: float = 1_000.0, **kw: Any) -> StepRecord:
    """A finished tool step `key` of `run_id` at journal position `pos`."""
    fields: dict[str, Any] = {
        "run_id": run_id,
        "key": key,
        "scope": "",
        "position": pos,
        "kind": StepKind.TOOL,
        "name": key.split("#")[0],
        "digest": "d",
        "status": StepStatus.OK,
        "started_at": at,
        "ended_at": at + 1,
        **kw,
    }
    return StepRecord(**fields)


def step(
    run_id: str,
    key: str,
    pos: int = 0,
    output: bytes | None = b"1",
    *,
    usage: Usage | None = None,
    **kw: Any,
) -> StepWrite:
    """A journal entry with its JSON output (and usage, if metered)."""
    return StepWrite(rec(run_id, key, pos, **kw), output, None, usage)


def usage(cost: float, model: str = "m", tokens: int = 1, hit: bool = False) -> Usage:
    return Usage(
        model=model, input_tokens=tokens, output_tokens=tokens, cost_usd=cost, cache_hit=hit
    )


async def create(
    store: Store, run_id: str, workflow: str = "wf", input_json: bytes = b"{}", **kw: Any
) -> tuple[RunInfo, bool]:
    return await _with_now(  # type: ignore[no-any-return]
        store,
        "create_run",
        {"run_id": run_id, "workflow": workflow, "input_json": input_json, **kw},
    )


async def claim(
    store: Store,
    owner: str,
    *,
    lease: float = LEASE,
    limit: int = 10,
    workflows: Iterable[str] = WF,
    ids: Iterable[str] | None = None,
) -> list[str]:
    """The ids `owner` claimed, in the order the store returned them."""
    got = await _with_now(
        store,
        "claim",
        {
            "owner": owner,
            "lease_seconds": lease,
            "limit": limit,
            "workflows": list(workflows),
            "ids": None if ids is None else list(ids),
        },
    )
    return [c.run.id for c in got]


async def claimed(
    store: Store, run_id: str = "r1", owner: str = "A", workflow: str = "wf", **kw: Any
) -> None:
    """Create `run_id` and let `owner` claim it."""
    await create(store, run_id, workflow, **kw)
    assert await claim(store, owner, workflows=[workflow], ids=[run_id]) == [run_id]


async def renew(store: Store, owner: str, run_ids: Sequence[str], lease: float = LEASE) -> set[str]:
    return await _with_now(  # type: ignore[no-any-return]
        store, "renew", {"owner": owner, "run_ids": list(run_ids), "lease_seconds": lease}
    )


async def suspend(
    store: Store,
    run_id: str,
    owner: str,
    *,
    wake_at: float | None = None,
    waiting_on: Sequence[str] = (),
    writes: Sequence[StepWrite] = (),
) -> RunStatus:
    return await _with_now(  # type: ignore[no-any-return]
        store,
        "suspend_run",
        {
            "run_id": run_id,
            "owner": owner,
            "wake_at": wake_at,
            "waiting_on": list(waiting_on),
            "writes": list(writes),
        },
    )


async def finish(
    store: Store,
    run_id: str,
    owner: str,
    status: RunStatus = RunStatus.SUCCEEDED,
    result_json: bytes | None = b'"ok"',
    *,
    error: StructuredError | None = None,
    state_json: bytes | None = None,
    writes: Sequence[StepWrite] = (),
) -> None:
    await _with_now(
        store,
        "finish_run",
        {
            "run_id": run_id,
            "owner": owner,
            "status": status,
            "result_json": result_json,
            "error": error,
            "state_json": state_json,
            "writes": list(writes),
        },
    )


async def release(store: Store, run_id: str, owner: str, writes: Sequence[StepWrite] = ()) -> None:
    await _with_now(
        store, "release_run", {"run_id": run_id, "owner": owner, "writes": list(writes)}
    )


async def cancel(store: Store, run_id: str) -> RunInfo:
    return await _with_now(store, "cancel_run", {"run_id": run_id})  # type: ignore[no-any-return]


async def signal(
    store: Store, run_id: str, name: str, payload: bytes = b"1", *, only_if_waiting: bool = False
) -> RunInfo:
    return await _with_now(  # type: ignore[no-any-return]
        store,
        "send_signal",
        {
            "run_id": run_id,
            "name": name,
            "payload_json": payload,
            "only_if_waiting": only_if_waiting,
        },
    )


async def status(store: Store, run_id: str) -> RunStatus:
    run = await store.get_run(run_id)
    assert run is not None, f"run {run_id} is gone"
    return run.status


async def commit(
    store: Store,
    run_id: str,
    owner: str | None,
    *steps: StepWrite,
    reviews: Sequence[ReviewRequest] = (),
    escalations: Sequence[Escalation] = (),
) -> Committed:
    """Commit one unit of work: `steps`, `reviews` and `escalations` land together."""
    unit = UnitOfWork(
        run_id, owner, steps=list(steps), reviews=list(reviews), escalations=list(escalations)
    )
    return await store.commit(unit)


async def until_store_time(store: Store, t: float) -> None:
    """Wait until the store's clock is past `t` (a bound from tests/limits.py, no timing)."""
    import asyncio

    from tests.limits import WAIT

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while await store.now() <= t:
        assert loop.time() < deadline, f"the store's clock never passed {t}"
        await asyncio.sleep(0.01)


async def journal(store: Store, run_id: str) -> list[StepRecord]:
    """The run's entries in journal order (`load_steps` promises no order)."""
    return sorted(await store.load_steps(run_id), key=lambda s: (s.scope, s.position, s.key))
