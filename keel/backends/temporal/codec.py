"""An App's payload codec (`KEEL_ENCRYPTION_KEY`, `keel.App(codec=...)`) on Temporal.

Keel stores every payload encoded when its App has a codec; on Temporal the payloads
live in Temporal's history instead (run input and result, tool arguments and outputs,
signals), so the same codec encodes them there: each Temporal payload, serialised
whole, becomes the codec's output, tagged with the key id that sealed it (rotation
works as in Keel's store). Temporal sees only `binary/keel` payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.codec import PayloadCodec

if TYPE_CHECKING:
    from temporalio.api.common.v1 import Payload

ENCODING = b"binary/keel"
_CONTEXT = b"keel/temporal-payload"  # bound as associated data: not movable elsewhere


def temporal_codec(codec: PayloadCodec) -> Any:
    """A `temporalio.converter.PayloadCodec` applying Keel's `codec` to every payload.

    Example:
        converter = dataclasses.replace(DataConverter.default, payload_codec=temporal_codec(c))
    """
    from temporalio.api.common.v1 import Payload
    from temporalio.converter import PayloadCodec as TemporalPayloadCodec

    class KeelPayloadCodec(TemporalPayloadCodec):
        async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
            return [
                Payload(
                    metadata={"encoding": ENCODING, "keel-key-id": codec.key_id.encode()},
                    data=codec.encode(p.SerializeToString(), _CONTEXT),
                )
                for p in payloads
            ]

        async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
            out = []
            for p in payloads:
                if p.metadata.get("encoding") != ENCODING:
                    out.append(p)  # written before the codec was set: read as it is
                    continue
                key = p.metadata.get("keel-key-id", b"").decode()
                out.append(Payload.FromString(codec.decode(p.data, key, _CONTEXT)))
            return out

    return KeelPayloadCodec()


__all__ = ["ENCODING", "temporal_codec"]
