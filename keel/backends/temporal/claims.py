"""The claim check: payloads too large for a Temporal history live in Keel's store.

Temporal refuses a payload over 2 MB, and a big one bloats every replay of its
history. Every payload over a threshold (tool arguments and outputs, run input and
result, signals, query results, failure details: the SDK passes all of them through
its payload codec) is saved to Keel's store as a blob and replaced in the history by a
small reference: the blob's key, its SHA-256 and its size. Decoding fetches the blob
back and checks the digest.

Why a payload codec and not temporalio's `ExternalStorage` (experimental in 1.35): the
SDK applies external storage after the codec, so with an encrypting App it would store
ciphertext, which is different on every encode (a random nonce); a replaying worker
encodes the same commands again and would write a new blob each time. Here the claim
runs first, on the clear payload, so the key is content-addressed and a second encode
writes nothing; the App's codec then encrypts the small reference for the history, and
Keel's store seals the blob itself with the same codec (blobs are sealed at rest).

Codecs run in the SDK's conversion layer, outside workflow code: the store round trip
has no effect on determinism.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import PayloadUnreadable, RunNotFound

if TYPE_CHECKING:
    from temporalio.api.common.v1 import Payload

    from keel.store.journal import JournalStore

ENCODING = b"json/keel-claim"
# 256 KiB: what temporalio's own external storage defaults to, half of the size at which
# Temporal starts warning about a payload (512 KB), and small enough that a workflow task
# scheduling several large calls stays far from gRPC's 4 MB message limit and a history
# from its 50 MB limit. The price of a lower one: a store round trip per payload above it.
CLAIM_THRESHOLD = 256 * 1024


def claim_key(run_id: str, digest: str) -> str:
    """The blob key of a claim: the run id in it ties the blob to its run, so Keel's
    retention purges it with the run (keel/store/sql/retention.py)."""
    return f"claim:{run_id}:{digest}"


def claim_codec(
    store: Callable[[], JournalStore], inner: Any = None, threshold: int = CLAIM_THRESHOLD
) -> Any:
    """A `temporalio.converter.PayloadCodec` moving payloads over `threshold` bytes to
    the store `store()` returns (called on the first claim: no store is opened for
    small payloads), then applying `inner` (Keel's encrypting codec for Temporal).

    Example:
        codec = claim_codec(lambda: app.store, temporal_codec(app.codec))
        converter = dataclasses.replace(DataConverter.default, payload_codec=codec)
    """
    from temporalio.api.common.v1 import Payload
    from temporalio.converter import PayloadCodec as TemporalPayloadCodec
    from temporalio.converter import SerializationContext, WithSerializationContext

    class KeelClaimCodec(TemporalPayloadCodec, WithSerializationContext):
        keel_claims = True  # what `has_claims` looks for
        encrypts = inner is not None

        def __init__(self, run_id: str = "") -> None:
            self.run_id = run_id  # the workflow the payloads belong to ("" if unknown)
            self.store = store
            self.threshold = threshold

        def with_context(self, context: SerializationContext) -> KeelClaimCodec:
            run_id = getattr(context, "workflow_id", None) or ""
            return self if run_id == self.run_id else KeelClaimCodec(run_id)

        async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
            out = [await self._claim(p) for p in payloads]
            return out if inner is None else list(await inner.encode(out))

        async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
            clear = list(payloads) if inner is None else list(await inner.decode(payloads))
            return [await _fetch(store(), p) if _claimed(p) else p for p in clear]

        async def _claim(self, payload: Payload) -> Payload:
            if payload.ByteSize() <= self.threshold:
                return payload
            data = payload.SerializeToString(deterministic=True)
            digest = hashlib.sha256(data).hexdigest()
            key = claim_key(self.run_id, digest)
            await self.store().save_blob(key, data)
            ref = {"key": key, "sha256": digest, "size": len(data)}
            return Payload(metadata={"encoding": ENCODING}, data=json.dumps(ref).encode())

    return KeelClaimCodec()


def _claimed(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


async def _fetch(store: JournalStore, payload: Payload) -> Payload:
    """The payload the claim reference `payload` stands for."""
    from temporalio.api.common.v1 import Payload

    ref = _reference(payload)
    key, digest = ref["key"], ref["sha256"]
    try:
        data = await store.load_blob(key)
    except RunNotFound:
        raise PayloadUnreadable(
            f"a payload of {ref.get('size', '?')} bytes kept out of Temporal's history "
            f"(claim {key}) is not in Keel's store {_url(store)}: the run's claims were "
            "purged by retention (keel runs purge), or this process uses another store "
            "than the worker that wrote it; point every worker and client of this "
            "Temporal namespace at the same Keel store (KEEL_STORE)",
            key=key,
            sha256=digest,
        ) from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise PayloadUnreadable(
            f"the payload kept out of Temporal's history as claim {key} does not match its "
            f"SHA-256 in Keel's store {_url(store)}: the blob was changed; restore it from "
            "a backup of the store",
            key=key,
            sha256=digest,
        )
    return Payload.FromString(data)


def _reference(payload: Payload) -> dict[str, Any]:
    try:
        ref = json.loads(payload.data)
        if isinstance(ref, dict) and all(isinstance(ref.get(f), str) for f in ("key", "sha256")):
            return ref
    except ValueError:
        pass
    raise PayloadUnreadable(
        f"a claim reference in Temporal's history is malformed ({payload.data[:100]!r}); "
        "it was not written by Keel's claim check"
    )


def _url(store: Any) -> str:
    return str(getattr(store, "url", "(unknown)"))


def has_claims(codec: Any) -> bool:
    """Whether a client's payload codec is Keel's claim check."""
    return getattr(codec, "keel_claims", False) is True


__all__ = ["CLAIM_THRESHOLD", "ENCODING", "claim_codec", "claim_key", "has_claims"]
