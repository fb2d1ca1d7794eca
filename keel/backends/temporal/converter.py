"""Temporal's default data converter with Keel's payload codec, cheap to put in context.

Keel's claim codec depends on the run (a claim's blob key names it), so temporalio puts
the converter in each payload's serialization context: every activity task, activity
result and scheduled command. temporalio's own `DataConverter.with_context` clones with
`dataclasses.replace`, which runs `__post_init__` and builds a new payload converter and
failure converter each time, only to replace them: most of what Keel's layer cost in
worker CPU over raw temporalio (bench/README.md, "Keel on Temporal"). This converter
copies itself instead and sets the parts the context changed, nothing else.

Example:
    converter = keel_converter(claim_codec(lambda: app.store))
    client = await Client.connect(address, data_converter=converter)
"""

from __future__ import annotations

import functools
from typing import Any

# the converter's parts that may take a serialization context (temporalio 1.35)
_PARTS = ("payload_converter", "payload_codec", "failure_converter", "external_storage")
_MEMO = 256  # contexts remembered per converter (each a few small objects)


def keel_converter(codec: Any) -> Any:
    """Temporal's default `DataConverter` with `codec` on its payloads, whose
    `with_context` costs a copy, not a rebuild."""
    return _converter_class()(payload_codec=codec)


@functools.cache
def _converter_class() -> type[Any]:
    import dataclasses

    from temporalio.converter import DataConverter, WithSerializationContext

    aware: dict[type[Any], bool] = {}  # per class: whether it takes a context

    @dataclasses.dataclass(frozen=True)
    class KeelDataConverter(DataConverter):
        def with_context(self, context: Any) -> Any:
            # temporalio asks again for each payload sequence of one command or result
            memo: dict[Any, Any] = self.__dict__.setdefault("_keel_contexts", {})
            try:
                found = memo.get(context)
            except TypeError:  # a context that cannot be a key: no memo
                return self._in_context(context)
            if found is None:
                if len(memo) >= _MEMO:
                    memo.clear()  # (safe if activations in threads race on it)
                found = memo[context] = self._in_context(context)
            return found

        def _in_context(self, context: Any) -> Any:
            changed: dict[str, Any] = {}
            for name in _PARTS:
                part = getattr(self, name)
                kind = type(part)
                takes = aware.get(kind)
                if takes is None:
                    takes = aware[kind] = isinstance(part, WithSerializationContext)
                if takes:
                    new = part.with_context(context)
                    if new is not part:
                        changed[name] = new
            if not changed:
                return self
            # a copy without __init__: the converters built once are kept as they are
            clone = object.__new__(type(self))
            clone.__dict__.update(self.__dict__, **changed)
            clone.__dict__["_keel_contexts"] = {}
            return clone

    return KeelDataConverter


__all__ = ["keel_converter"]
