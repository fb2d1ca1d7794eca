"""The claim check on a real Temporal dev server: payloads over Temporal's 2 MB limit
(run input, tool arguments and outputs, signals, the workflow's result) go to Keel's
store; the history holds only small references, encrypted when the App encrypts, and
replays from them. A reference whose blob is gone fails with what happened and why."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, replayer, result, serve, signal, start
from keel.backends.temporal.claims import CLAIM_THRESHOLD, ENCODING
from keel.codec import AESGCMCodec
from keel.store import open_store
from keel.store.records import PurgeScope
from tests.limits import WAIT
from tests.test_temporal_backend import _payloads

MB3 = 3 * 1024 * 1024


async def produce(n: int, tag: str) -> str:
    return tag * n


async def measure(text: str) -> int:
    return len(text)


async def big(ctx: keel.Context, seed: str) -> dict[str, Any]:
    text = await ctx.call(produce, MB3, "s")  # a ~3 MB tool output
    size = await ctx.call(measure, text + seed)  # a ~6 MB tool argument
    note = await ctx.wait_for("note", timeout=3600)  # a ~3 MB signal
    return {"size": size, "note": len(note["text"]), "echo": text}  # a ~3 MB result


def _app(store_url: str, codec: Any = None) -> keel.App:
    app = keel.App(store_url, codec=codec)
    app.tool(produce)
    app.tool(measure)
    app.workflow(big)
    return app


async def _run(app: keel.App, address: str) -> tuple[Backend, str, Any]:
    """Run `big` to its end on a worker that replays every task; its id and history."""
    backend = Backend(address=address, task_queue=f"claim-{uuid.uuid4().hex[:8]}")
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        rid = await start(app, client, backend, "big", {"seed": "secret-" * (MB3 // 7)})
        await signal(client, rid, "note", {"text": "secret-note " * (MB3 // 12)})
        out = await asyncio.wait_for(result(app, client, rid), WAIT)
    assert out == {"size": 2 * MB3 - MB3 % 7, "note": MB3 - MB3 % 12, "echo": "s" * MB3}
    raw = await connect(backend)  # no codec: the history as Temporal holds it
    return backend, rid, await raw.get_workflow_handle(rid).fetch_history()


async def test_large_payloads_travel_as_references(temporal_address: str, store_url: str) -> None:
    app = _app(store_url)
    _, rid, history = await _run(app, temporal_address)
    payloads = [p for e in history.events for p in _payloads(e)]
    assert max(p.ByteSize() for p in payloads) <= CLAIM_THRESHOLD
    claims = [p for p in payloads if p.metadata["encoding"] == ENCODING]
    assert len(claims) >= 5  # input, tool output, tool argument, signal, result
    assert all(f"claim:{rid}:".encode() in p.data for p in claims)  # tied to the run
    await replayer(app).replay_workflow(history)  # replays from the references
    keys = [json.loads(p.data)["key"] for p in claims]
    store = app.store  # retention: the run's claims go with it
    purged = await store.purge_runs(PurgeScope(ended_before=await store.now() + 60))
    assert purged.runs == 1 and purged.blobs >= len(set(keys))  # + its steps' blobs
    for key in keys:
        with pytest.raises(keel.RunNotFound):
            await store.load_blob(key)
    await app.close()


async def test_an_encrypting_app_keeps_claims_encrypted_and_replays_them(
    temporal_address: str, store_url: str
) -> None:
    codec = AESGCMCodec([os.urandom(32)])
    app = _app(store_url, codec)
    _, _, history = await _run(app, temporal_address)
    payloads = [p for e in history.events for p in _payloads(e)]
    assert max(p.ByteSize() for p in payloads) <= CLAIM_THRESHOLD
    assert not any(b"secret" in p.data or b"claim:" in p.data for p in payloads)
    await replayer(app).replay_workflow(history)
    clear = open_store(store_url)  # the same store, without the key
    try:
        keys = await _claim_keys(app, payloads)
        assert len(keys) >= 5
        for key in keys:
            with pytest.raises(keel.KeelError, match="encrypted"):
                await clear.load_blob(key)  # sealed at rest: never stored in clear
    finally:
        await clear.close()
    await app.close()


async def _claim_keys(app: keel.App, payloads: list[Any]) -> list[str]:
    """The blob keys of the (encrypted) claim references in `payloads`."""
    from keel.backends.temporal.codec import temporal_codec

    assert app.codec is not None
    opened = await temporal_codec(app.codec).decode(payloads)
    return [json.loads(p.data)["key"] for p in opened if p.metadata["encoding"] == ENCODING]


async def test_a_missing_blob_says_which_and_why(
    temporal_address: str, store_url: str, tmp_path: Any
) -> None:
    app = _app(store_url)
    backend, rid, _ = await _run(app, temporal_address)
    elsewhere = _app(f"sqlite:///{tmp_path}/another.db")  # a store without the claims
    client = await connect(backend, app=elsewhere)
    with pytest.raises(keel.PayloadUnreadable) as caught:
        await result(elsewhere, client, rid)
    message = caught.value.message
    assert f"(claim claim:{rid}:" in message and "is not in Keel's store" in message
    assert "purged by retention" in message and "another store" in message
    await elsewhere.close()
    await app.close()


async def test_encoding_is_idempotent_and_a_changed_blob_or_bad_reference_is_refused(
    tmp_path: Any,
) -> None:
    """Without a server: the codec as the SDK calls it, on real stores."""
    from temporalio.api.common.v1 import Payload
    from temporalio.converter import WorkflowSerializationContext

    from keel.backends.temporal.claims import claim_codec

    store, other = (
        open_store(f"sqlite:///{tmp_path}/a.db"),
        open_store(f"sqlite:///{tmp_path}/b.db"),
    )
    try:
        base = claim_codec(lambda: store, None, threshold=100)
        codec = base.with_context(
            WorkflowSerializationContext(namespace="default", workflow_id="r1")
        )
        payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 500 + b'"')
        small = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
        first = await codec.encode([payload, small])
        again = await codec.encode([payload])  # a replaying worker encodes it again
        assert first[0] == again[0] and first[1] == small  # the same reference; small stays
        assert b"claim:r1:" in first[0].data and first[0].ByteSize() < 300
        assert await codec.decode(first) == [payload, small]
        key = json.loads(first[0].data)["key"]
        await other.save_blob(key, b"changed")  # the same key, other bytes
        with pytest.raises(keel.PayloadUnreadable, match="does not match its SHA-256"):
            await claim_codec(lambda: other).decode(first)
        bad = Payload(metadata={"encoding": ENCODING}, data=b"nonsense")
        with pytest.raises(keel.PayloadUnreadable, match=r"claim reference .* is malformed"):
            await codec.decode([bad])
    finally:
        await store.close()
        await other.close()


async def test_a_client_without_the_claim_check_or_a_bad_threshold_is_refused(
    temporal_address: str, store_url: str
) -> None:
    app = _app(store_url)
    backend = Backend(address=temporal_address, task_queue=f"claim-{uuid.uuid4().hex[:8]}")
    plain = await connect(backend)
    with pytest.raises(keel.ConfigError, match=r"no claim check.*connect\(backend, app=app\)"):
        async with serve(app, plain, backend):
            pass
    with pytest.raises(keel.ConfigError, match="no claim check"):
        await start(app, plain, backend, "big", {"seed": "s"})
    for bad, says in ((-1, "give 0 to 1048576 bytes"), (4 << 20, "give 0 to"), ("1", "bytes")):
        with pytest.raises(keel.ConfigError, match=says):
            await connect(backend, app=app, claim_threshold=bad)  # type: ignore[arg-type]
    with pytest.raises(keel.ConfigError, match="the codec differs from the App's"):
        await connect(backend, app=app, codec=AESGCMCodec([os.urandom(32)]))
    await app.close()
