"""The `Session` every neutral query function works with: one connection's statements
(rendered for its dialect), its write transaction, payload sealing, and decoding rows
into records.

A backend subclasses `Session` for its driver (see `keel.store.sql.dialect` for what it
must provide); everything else in `keel.store.sql` is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from keel._jsonv import from_json
from keel.store import _sealed
from keel.store.sql.dialect import Connection, Cursor, Dialect, Renderer
from keel.types import (
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StructuredError,
    live_degraded,
    superseded_attempts,
)

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

# `{run_cols}`: the degraded steps and phase attempts (1) of a run, which tell which
# attempts were thrown away, come with it.
RUN_COLS = (
    "id, workflow, status, input, result, error, state, created_at, updated_at, ended_at, "
    "wake_at, waiting_on, attempts, lease_owner,"
    " (SELECT {agg} FROM steps s"
    "  WHERE s.run_id = runs.id AND (s.fallback = 'degrade' OR s.kind = 'phase')), tenant,"
    " session"
)
STEP_COLS = (
    "run_id, key, scope, position, kind, name, digest, status, output, error, attempts, "
    "started_at, ended_at, wake_at, state_delta, blob, fallback, input, attempt_log"
)
ESC_COLS = (
    "id, run_id, workflow, queue, kind, step, status, packet, resolution, created_at,"
    " resolved_at, resolved_by"
)
REVIEW_COLS = (
    "id, kind, run_id, workflow, step, queue, status, request, decision, deadline,"
    " created_at, decided_at, decided_by"
)
_RUN_SEALED = ((3, "runs.input"), (4, "runs.result"), (5, "runs.error"), (6, "runs.state"))
_STEP_SEALED = (
    (6, "steps.digest"),
    (8, "steps.output"),
    (9, "steps.error"),
    (14, "steps.state_delta"),
    (17, "steps.input"),
    (18, "steps.attempt_log"),
)


def loads(text: str | None) -> Any:
    """A JSON column's value (None stays None)."""
    return None if text is None else from_json(text)


def renderer(dialect: Dialect, now: str | None = None) -> Renderer:
    """The `Renderer` of a store on `dialect` (`now`: another clock expression)."""
    extra: dict[str, object] = {
        "run_cols": RUN_COLS.format(agg=dialect.json_array_agg("s.key", "s.kind = 'phase'"))
    }
    if now is not None:
        extra["now"] = now
    return Renderer(dialect, extra)


class Session:
    """One connection's view of the store, for the neutral query functions.

    Example (a backend's store, inside `_call`):
        >>> run = runs.get_run(session, "r1")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        codec: PayloadCodec | None,
        dialect: Dialect,
        render: Renderer,
        conn: Connection,
    ) -> None:
        self.url = url
        self.codec = codec
        self.dialect = dialect
        self.render = render
        self._conn = conn
        self._cache = render.cache

    # -- statements -------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one neutral statement (rendered once, then taken from the cache)."""
        q = self._cache.get(sql)
        if q is None:
            q = self.render(sql)
        return self._conn.execute(q, params)  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        """Run one neutral statement for each of `rows`."""
        return self._conn.executemany(self.render(sql), rows)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed at the end, rolled back on any error."""
        raise NotImplementedError
        yield self  # pragma: no cover

    @contextlib.contextmanager
    def scrubbing(self) -> Iterator[None]:
        """Deleted and overwritten values are zeroed on disk meanwhile (where the
        database can; a no-op otherwise)."""
        yield

    # -- payloads: sealed by the codec when there is one (keel/store/_sealed.py) ------

    def seal(self, data: bytes | str | None, where: str, *row: str) -> str | bytes | None:
        """What to store for payload `data` of column `where` (row key `row`)."""
        if data is None:
            return None
        if self.codec is None:
            return data if isinstance(data, str) else data.decode()
        raw = data.encode() if isinstance(data, str) else data
        return _sealed.seal(self.codec, raw, where, row)

    def open(self, value: str | bytes | None, where: str, *row: str) -> str | None:
        """A stored payload read back as text."""
        if value is None or type(value) is str:
            return value
        out = _sealed.unseal(self.codec, value, where, row)
        return out if isinstance(out, str) else out.decode()

    def opened(
        self, row: Sequence[Any], cols: tuple[tuple[int, str], ...], *key: str
    ) -> Sequence[Any]:
        """`row` with its payload columns (index, column) read back as text."""
        if all(type(row[i]) is not bytes for i, _ in cols):
            return row  # all clear: the usual case without a codec
        out = list(row)
        for i, where in cols:
            out[i] = self.open(out[i], where, *key)
        return out

    # -- rows into records --------------------------------------------------------

    def as_run(self, row: Sequence[Any]) -> RunInfo:
        """A `{run_cols}` row as a record."""
        return _run(self.opened(row, _RUN_SEALED, row[0]))

    def as_step(self, row: Sequence[Any]) -> StepRecord:
        """A `STEP_COLS` row as a record."""
        return _step(self.opened(row, _STEP_SEALED, row[0], row[1]))


def _err(text: str | None) -> StructuredError | None:
    return None if text is None else StructuredError.model_validate_json(text)


def _run(row: Sequence[Any]) -> RunInfo:
    return RunInfo(
        id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        input=loads(row[3]) or {},
        result=loads(row[4]),
        error=_err(row[5]),
        state=loads(row[6]),
        created_at=row[7],
        updated_at=row[8],
        ended_at=row[9],
        wake_at=row[10],
        waiting_on=loads(row[11]) or [],
        attempts=row[12],
        lease_owner=row[13],
        degraded=_degraded(loads(row[14]) or []),
        tenant=row[15],
        session=row[16] or row[0],  # started without one (or before v16): its own
    )


def _degraded(pairs: list[list[Any]]) -> list[str]:
    attempts = [k for k, phase in pairs if phase]
    degraded = [k for k, phase in pairs if not phase]
    if not attempts:
        return sorted(degraded)
    return live_degraded(degraded, superseded_attempts(attempts, degraded))


def _step(row: Sequence[Any]) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        key=row[1],
        scope=row[2],
        position=row[3],
        kind=StepKind(row[4]),
        name=row[5],
        digest=row[6],
        status=StepStatus(row[7]),
        output=loads(row[8]),
        error=_err(row[9]),
        attempts=row[10],
        started_at=row[11],
        ended_at=row[12],
        wake_at=row[13],
        state_delta=loads(row[14]),
        blob=row[15],
        fallback=row[16],
        input=loads(row[17]),
        attempt_log=loads(row[18]),
    )
