"""JournalStore conformance: runs (idempotent starts, reads, filters, cancel) and the
journal (entries in order, errors, large payloads out of line, blobs shared by digest).

Only the store's methods are used, never SQL: every backend must pass these as they are.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pydantic_core
import pytest

from keel.errors import RunNotFound, SignalRefused
from keel.store import RunFilter, Store
from keel.store.records import StepWrite
from keel.types import RunStatus, StepStatus, StructuredError
from tests.store.kit import (
    cancel,
    claim,
    claimed,
    commit,
    create,
    finish,
    journal,
    rec,
    signal,
    step,
)


async def test_create_run_is_idempotent(store: Store) -> None:
    run, created = await create(store, "r1", input_json=b'{"x":1}', tenant="acme")
    assert created
    assert (run.id, run.workflow, run.status, run.input, run.tenant) == (
        "r1",
        "wf",
        RunStatus.PENDING,
        {"x": 1},
        "acme",
    )
    again, created = await create(store, "r1", "other", b'{"x":2}')
    assert not created
    assert (again.workflow, again.input, again.created_at) == ("wf", {"x": 1}, run.created_at)
    assert await store.get_run("missing") is None
    assert [r.id for r in await store.list_runs(RunFilter())] == ["r1"]


async def test_runs_are_listed_newest_first_and_filtered(store: Store) -> None:
    await create(store, "a", "wf", now=1_000.0)
    await create(store, "b", "other", now=1_001.0)
    await cancel(store, "b")
    ids = [r.id for r in await store.list_runs(RunFilter())]
    assert ids == ["b", "a"]
    assert [r.id for r in await store.list_runs(RunFilter(workflow="wf"))] == ["a"]
    assert [r.id for r in await store.list_runs(RunFilter(status=RunStatus.CANCELLED))] == ["b"]
    assert [r.id for r in await store.list_runs(RunFilter(since=1_001.0))] == ["b"]
    assert [r.id for r in await store.list_runs(RunFilter(until=1_001.0))] == ["a"]  # exclusive
    both = RunFilter(since=1_000.0, until=1_002.0)
    assert [r.id for r in await store.list_runs(both)] == ["b", "a"]
    assert await store.list_runs(RunFilter(since=1_001.0, until=1_001.0)) == []
    assert len(await store.list_runs(RunFilter(limit=1))) == 1


async def test_cancel_ends_a_pending_run_and_leaves_an_ended_one(store: Store) -> None:
    await create(store, "r1")
    assert (await cancel(store, "r1")).status is RunStatus.CANCELLED
    assert await claim(store, "A") == []  # a cancelled run is never claimed
    await claimed(store, "r2")
    await finish(store, "r2", "A")
    assert (await cancel(store, "r2")).status is RunStatus.SUCCEEDED  # stays done
    with pytest.raises(RunNotFound):
        await cancel(store, "missing")


async def test_finish_records_result_state_and_error(store: Store) -> None:
    await claimed(store, "ok")
    await finish(store, "ok", "A", result_json=b'{"n":2}', state_json=b'{"s":1}')
    run = await store.get_run("ok")
    assert run is not None
    assert (run.status, run.result, run.state, run.lease_owner) == (
        RunStatus.SUCCEEDED,
        {"n": 2},
        {"s": 1},
        None,
    )
    assert run.ended_at is not None
    err = StructuredError(type="ValueError", message="bad", types=["ValueError"])
    await claimed(store, "bad")
    await finish(store, "bad", "A", RunStatus.FAILED, None, error=err)
    failed = await store.get_run("bad")
    assert failed is not None and (failed.status, failed.error) == (RunStatus.FAILED, err)
    with pytest.raises(SignalRefused, match="already SUCCEEDED"):
        await signal(store, "ok", "go")


async def test_steps_load_in_journal_order_with_errors_and_deltas(store: Store) -> None:
    await claimed(store)
    err = StructuredError(type="ValueError", message="bad", types=["ValueError"], step="b#0")
    await commit(store, "r1", "A", step("r1", "c#0", 2, b"3"))
    await commit(
        store,
        "r1",
        "A",
        step("r1", "a#0", 0, b'{"k":[1,2]}', state_delta={"n": 1}),
        step("r1", "b#0", 1, None, status=StepStatus.ERROR, error=err),
    )
    steps = await journal(store, "r1")
    assert [s.key for s in steps] == ["a#0", "b#0", "c#0"]
    assert steps[0].output == {"k": [1, 2]} and steps[0].state_delta == {"n": 1}
    assert steps[1].status is StepStatus.ERROR and steps[1].error == err
    assert steps[2].output == 3
    # the same key written again replaces its entry (a pending timer that finished)
    await commit(store, "r1", "A", step("r1", "a#0", 0, b'"new"'))
    assert [s.output for s in await journal(store, "r1")] == ["new", None, 3]


async def test_a_step_keeps_every_field_it_was_written_with(store: Store) -> None:
    await claimed(store)
    written = rec(
        "r1",
        "tool#0",
        input={"args": [1], "kwargs": {}},
        attempts=3,
        attempt_log=[{"start": 1.0, "end": 2.0, "error": {"type": "E", "message": "m"}}],
        fallback="degrade",
        wake_at=5_000.0,
        state_delta={"a": None},
    )
    await commit(store, "r1", "A", StepWrite(written, b"7"))
    (got,) = await store.load_steps("r1")
    assert got == written.model_copy(update={"output": 7})


async def test_large_outputs_go_out_of_line_and_come_back(store: Store) -> None:
    await claimed(store)
    big = pydantic_core.to_json("x" * (5 * 1024 * 1024))  # 5 MB
    digest = hashlib.sha256(big).hexdigest()
    await commit(store, "r1", "A", StepWrite(rec("r1", "big#0", blob=digest), None, big))
    (got,) = await store.load_steps("r1")
    assert (got.output, got.blob) == (None, digest)
    assert await store.load_blob(digest) == big
    with pytest.raises(RunNotFound):
        await store.load_blob("no-such-digest")


async def test_a_large_inline_output_round_trips(store: Store) -> None:
    await claimed(store)
    value: dict[str, Any] = {"rows": ["y" * 1000] * 5000}  # 5 MB of JSON in the step itself
    await commit(store, "r1", "A", step("r1", "big#0", 0, pydantic_core.to_json(value)))
    (got,) = await store.load_steps("r1")
    assert got.output == value


async def test_blobs_are_shared_by_digest(store: Store) -> None:
    data = b'"' + b"z" * 100_000 + b'"'
    digest = hashlib.sha256(data).hexdigest()
    for run_id in ("r1", "r2"):
        await claimed(store, run_id)
        for i in range(2):  # the same output twice in one run, and once more in another
            key = f"s#{i}"
            await commit(
                store, run_id, "A", StepWrite(rec(run_id, key, i, blob=digest), None, data)
            )
    assert await store.load_blob(digest) == data
    for run_id in ("r1", "r2"):
        assert [s.blob for s in await store.load_steps(run_id)] == [digest, digest]
