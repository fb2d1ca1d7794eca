"""Session state: key-value state outside the context window (`ctx.session`), shared by
every run started with the same `session=` (a run started without one has its own).

Every call is one journaled operation (`StepKind.SESSION`): a replayed or resumed run
reads what its first attempt read, even if another run changed the key since, and a
write re-executed after a crash applies once (the backend keeps a receipt per writer:
run id + operation key), compare-and-set included. Values are JSON, like step outputs.
Where values live: Keel's store (default) or Redis (`KEEL_SESSION_STORE=redis://...`,
or `keel.App(session_store=...)`).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pydantic_core

from keel._ids import id_problem
from keel.engine.recovery import PLAIN, StepPolicy
from keel.errors import ConfigError, InputError, SerializationError
from keel.types import StepKind

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.store.base import Store
    from keel.store.session_state import SessionStateStore


class SessionState:
    """What `ctx.session` returns: this run's session, read and written step by step.

    Example:
        @app.workflow
        async def visit(ctx: keel.Context) -> int:
            seen = await ctx.session.get("visits", 0)
            await ctx.session.set("visits", seen + 1, ttl=3600)
            return seen + 1
    """

    __slots__ = ("_backend", "_ctx")

    def __init__(self, ctx: Context, backend: SessionStateStore) -> None:
        self._ctx = ctx
        self._backend = backend

    @property
    def id(self) -> str:
        """The session's id (`App.start(session=...)`, else the run's id)."""
        return self._ctx.session_id

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of `key` (JSON: dicts, lists, str, numbers, bools), or `default` when
        it is absent or expired. Journaled: a replay returns what was read first."""
        _check_key(key)
        op = self._ctx.operation("session.get", self.id, key, kind=StepKind.SESSION)
        got = await op.run(lambda: self._read(key), None, self._shown(key))
        return got.get("value", default)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Set `key` to `value` (expiring after `ttl` seconds; None: never)."""
        data = _encode(key, value)
        ttl = _check_ttl(ttl)
        op = self._ctx.operation("session.set", self.id, key, data, ttl, kind=StepKind.SESSION)
        await op.run(lambda: self._write(op.run_id, op.key, key, data, ttl), None, self._shown(key))

    async def delete(self, key: str) -> bool:
        """Delete `key`; whether it was there."""
        _check_key(key)
        op = self._ctx.operation("session.delete", self.id, key, kind=StepKind.SESSION)
        delete = lambda: self._write(op.run_id, op.key, key, None, None)  # noqa: E731
        return bool(await op.run(delete, bool, self._shown(key)))

    async def compare_and_set(
        self, key: str, expected: Any, value: Any, *, ttl: float | None = None
    ) -> bool:
        """Set `key` to `value` only if it holds `expected` now (None: only if absent),
        atomically; whether it did. Equal JSON values match (1 == 1.0, dict key order).

        Example (a counter every run of a session increments exactly once):
            while True:
                n = await ctx.session.get("n")  # None: not set yet
                if await ctx.session.compare_and_set("n", n, (n or 0) + 1):
                    break
        """
        data = _encode(key, value)
        want = None if expected is None else json.loads(_encode(key, expected))
        ttl = _check_ttl(ttl)
        op = self._ctx.operation(
            "session.cas", self.id, key, want, data, ttl, kind=StepKind.SESSION
        )
        writer = _writer(op.run_id, op.key)
        cas = lambda: self._cas(writer, key, want, data, ttl)  # noqa: E731
        return bool(await op.run(cas, bool, self._shown(key)))

    def _shown(self, key: str) -> StepPolicy:
        """A plain step journaling the session and key as its input (its span shows them;
        the value stays in the output, shown only where the trace keeps content)."""
        return PLAIN.with_input({"id": self.id, "key": key})

    # -- the effects (run once; their outcome is journaled) -------------------------

    async def _read(self, key: str) -> dict[str, Any]:
        entry = await self._backend.session_get(self.id, key)
        if entry is None:
            return {}
        return {"value": json.loads(entry.value), "version": entry.version}

    async def _write(
        self, run_id: str, op_key: str, key: str, data: str | None, ttl: float | None
    ) -> bool:
        writer = _writer(run_id, op_key)
        return await self._backend.session_write(self.id, key, data, writer=writer, ttl=ttl)

    async def _cas(self, writer: str, key: str, want: Any, data: str, ttl: float | None) -> bool:
        backend = self._backend
        while True:  # each turn round, another writer won: read its value and compare
            cur = await backend.session_get(self.id, key)
            held = None if cur is None else json.loads(cur.value)
            if (cur is None) != (want is None) or held != want:
                if cur is not None and cur.writer == writer:
                    return True  # this very write won before a crash; nobody wrote since
                return await backend.session_applied(self.id, writer)
            expect = None if cur is None else cur.writer
            if await backend.session_write(
                self.id, key, data, writer=writer, ttl=ttl, expect=expect
            ):
                return True


def _writer(run_id: str, op_key: str) -> str:
    # Run ids hold no whitespace: the space cannot be confused with part of one.
    return f"{run_id} {op_key}"


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise InputError(
            f"a session key must be a str, got {type(key).__name__}: name the field, e.g."
            " ctx.session.get('cart')",
            key_type=type(key).__name__,
        )
    problem = id_problem(key, "session key")
    if problem is not None:
        raise InputError(problem, key=key)


def _encode(key: str, value: Any) -> str:
    """`value` as JSON text, or a clear error that says what can be stored."""
    _check_key(key)
    if value is None:
        raise InputError(
            f"session key {key!r} cannot be set to None: None means absent here; use"
            f" ctx.session.delete({key!r}) to remove it",
            key=key,
        )
    try:
        return pydantic_core.to_json(value).decode()
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"session key {key!r}: a {type(value).__name__} cannot be stored ({exc}). Store"
            " JSON data (dict, list, str, int, float, bool) or a Pydantic model",
            key=key,
            value_type=type(value).__name__,
        ) from None


def _check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise InputError(f"ttl must be a number of seconds, got {ttl!r}", ttl=repr(ttl))
    if ttl <= 0:
        raise InputError(
            f"ttl must be more than 0 seconds, got {ttl}: pass ttl=None to keep the value"
            " until it is deleted",
            ttl=ttl,
        )
    return float(ttl)


def open_session_store(where: Any, store: Store) -> SessionStateStore:
    """The session backend `where` names: "" or None (Keel's `store`), a `redis://` or
    `rediss://` URL, or a `SessionStateStore` object.

    Example:
        backend = open_session_store("redis://127.0.0.1:6379/0", app.store)
    """
    from keel.store.session_state import SessionStateStore

    if where is None or where == "":
        return store
    if isinstance(where, SessionStateStore):
        return where
    if isinstance(where, str) and where.startswith(("redis://", "rediss://", "unix://")):
        from keel.store.redis_session import RedisSessionStore

        return RedisSessionStore(where)
    raise ConfigError(
        f"session store {where!r} is not one Keel knows: use a redis://host:port/db URL"
        " (KEEL_SESSION_STORE or keel.App(session_store=...)), or leave it unset to keep"
        " session state in Keel's store"
    )


__all__ = ["SessionState", "open_session_store"]
