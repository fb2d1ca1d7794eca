"""What each Temporal step costs Keel, kept cheap without weakening the record: journal
entries of concurrent activities share one transaction, each in the store before its
`record` returns (keel/backends/temporal/mirror.py); the data converter takes a
serialization context by copying, not rebuilding (keel/backends/temporal/converter.py).
No Temporal server: the store and the converter alone."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from keel.backends.temporal.mirror import Entry, open_run, record, running
from keel.store import Store
from keel.types import StepKind, StepStatus

RUN = "hot-1"


def _entry(i: int, **change: Any) -> Entry:
    entry = Entry(RUN, f"noop#{i}", "", i, StepKind.TOOL, "noop", "d", time.time(), 1)
    return dataclasses.replace(entry, data=b"%d" % i, input={"i": i}, **change)


def _count_commits(store: Store) -> list[int]:
    """Count the store's transactions (the real store still writes each one)."""
    sizes: list[int] = []
    commit = store.commit

    async def counted(uow: Any) -> Any:
        sizes.append(len(uow.steps))
        return await commit(uow)

    store.commit = counted  # type: ignore[method-assign]
    return sizes


async def _activity(store: Store, entry: Entry, *, strict: bool = False) -> None:
    """What an activity does: runs (counted), then records its entry."""
    with running():
        await asyncio.sleep(0)  # the tool's work: the others start meanwhile
        await record(store, entry, strict=strict)


async def _keys(store: Store) -> set[str]:
    return {s.key for s in await store.load_steps(RUN) if s.status is StepStatus.OK}


async def test_concurrent_entries_share_one_transaction_and_are_stored_on_return(
    store: Store,
) -> None:
    await open_run(store, RUN, "wf", b"{}", tenant=None, session=None)
    sizes = _count_commits(store)
    await asyncio.gather(*(_activity(store, _entry(i)) for i in range(20)))
    assert sizes == [20]  # one transaction, not twenty
    assert await _keys(store) == {f"noop#{i}" for i in range(20)}
    for i in range(20, 23):  # one at a time: each is in the store when record returns
        await _activity(store, _entry(i))
        assert f"noop#{i}" in await _keys(store)
    assert sizes == [20, 1, 1, 1]


async def test_an_entry_the_store_refuses_fails_alone(store: Store) -> None:
    await open_run(store, RUN, "wf", b"{}", tenant=None, session=None)
    bad = _entry(1, name=None)  # NOT NULL: the store refuses this row
    out = await asyncio.gather(
        _activity(store, _entry(0)),
        _activity(store, bad, strict=True),
        _activity(store, _entry(2)),
        return_exceptions=True,
    )
    assert out[0] is None and out[2] is None
    assert isinstance(out[1], Exception)  # the writer of the bad entry learns it
    assert await _keys(store) == {"noop#0", "noop#2"}  # the batch's others are written


async def test_a_cancelled_writer_leaves_no_entry_and_no_waiter_behind(store: Store) -> None:
    await open_run(store, RUN, "wf", b"{}", tenant=None, session=None)
    first = asyncio.create_task(_activity(store, _entry(0)))
    second = asyncio.create_task(_activity(store, _entry(1)))
    for _ in range(2):  # both run; then the first writes the batch, the second waits on it
        await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 30)  # handed on, not stranded
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await _keys(store) == {"noop#0", "noop#1"}  # the cancelled one's entry too


def test_the_converter_takes_a_context_without_rebuilding() -> None:
    from temporalio.converter import (
        ActivitySerializationContext,
        DataConverter,
        WorkflowSerializationContext,
    )

    from keel.backends.temporal.claims import claim_codec
    from keel.backends.temporal.converter import keel_converter

    base = keel_converter(claim_codec(lambda: None))
    theirs = dataclasses.replace(DataConverter.default, payload_codec=claim_codec(lambda: None))
    act = ActivitySerializationContext(
        namespace="default",
        workflow_id="run-7",
        workflow_type="triage",
        activity_type="keel.call",
        activity_task_queue="q",
        is_local=True,
        activity_id="3",
    )
    for context in (act, WorkflowSerializationContext(namespace="default", workflow_id="run-7")):
        ours, expected = base.with_context(context), theirs.with_context(context)
        assert ours.payload_codec.run_id == expected.payload_codec.run_id == "run-7"
        assert ours.payload_converter is base.payload_converter  # kept, not built again
        assert ours.failure_converter is base.failure_converter
        assert type(ours.payload_converter) is type(expected.payload_converter)
        assert base.payload_codec.run_id == ""  # the context-free one is unchanged
        assert ours.with_context(context).payload_codec.run_id == "run-7"
    # a codec that needs no context: the same converter back
    from keel.backends.temporal.codec import temporal_codec
    from keel.codec import AESGCMCodec

    plain = keel_converter(temporal_codec(AESGCMCodec([b"k" * 32])))
    assert plain.with_context(act) is plain
