"""Deterministic trace and span ids: a step has the same span id in every process.

That is what makes tracing replay-aware: a resumed run knows which spans exist,
re-emits only missing ones, and a duplicate can never enter the store.
"""

from __future__ import annotations

import hashlib


def _h(*parts: str, size: int) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=size).digest()
    return int.from_bytes(digest, "big") or 1


def trace_id(run_id: str) -> int:
    return _h("trace", run_id, size=16)


def step_span_id(run_id: str, key: str) -> int:
    return _h("step", run_id, key, size=8)


def call_span_id(run_id: str, key: str, attempt: int) -> int:
    return _h("call", run_id, key, str(attempt), size=8)


def execution_span_id(run_id: str, execution: int) -> int:
    return _h("exec", run_id, str(execution), size=8)


def hex_trace(value: int) -> str:
    return f"{value:032x}"


def hex_span(value: int) -> str:
    return f"{value:016x}"
