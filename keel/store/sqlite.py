"""SQLite backend: the zero-setup default.

`SQLiteStore` is `keel.store.sql.store.SQLStore` (the neutral queries of
`keel.store.sql`) on one `sqlite3` connection with the SQLite dialect: each call is one
short transaction run inline, cheaper than a hop to a thread. Here is only what is
SQLite's own: the connection and its settings, the write transaction (`BEGIN
IMMEDIATE`), secure delete, the file's space, and the schema's upgrades
(`_sqlite_schema`). `_sqlite_file.py` creates the file and explains its faults;
`_sealed.py` is the sealed payload's envelope.

Settings: WAL journal, synchronous=NORMAL (every commit survives a process kill; only
an OS crash or power loss can drop the last commits), busy timeout for several worker
processes on one file, and BEGIN IMMEDIATE for every write so a lease check and the
write it guards are one atomic unit.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from keel.errors import ConfigError
from keel.store import _sqlite_file
from keel.store._sqlite_schema import SCHEMA_VERSION, upgrade_script
from keel.store.records import RekeyCounts, StoreSpace
from keel.store.sql import rekey
from keel.store.sql.core import Session, renderer
from keel.store.sql.sqlite_dialect import SQLiteDialect
from keel.store.sql.store import SQLStore
from keel.store.wake import WakeFeed

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

P = ParamSpec("P")
R = TypeVar("R")
_DIALECT = SQLiteDialect()
_BEGIN = _DIALECT.begin_write


def _path_from_url(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = url[len("sqlite:///") :]
    if not path:
        raise ConfigError(f"bad SQLite URL {url!r}: no file path after sqlite:///")
    return path


class _SQLiteSession(Session):
    """The store's one connection, as the neutral queries use it."""

    _conn: sqlite3.Connection

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        db = self._conn
        db.execute(_BEGIN)
        try:
            yield self
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk does), and a failed COMMIT
            # leaves the transaction open: end it either way, keeping the first error.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def scrubbing(self) -> Iterator[None]:
        # Whatever the SQLite build's default (purges, rekey).
        db = self._conn
        (was,) = db.execute("PRAGMA secure_delete").fetchone()
        db.execute("PRAGMA secure_delete=1")
        try:
            yield
        finally:
            db.execute(f"PRAGMA secure_delete={int(was)}")


def _guarded(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Report a file or disk fault as one StoreError (path, cause, what to do)."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except sqlite3.Error as exc:
            if not _sqlite_file.is_fault(exc):
                raise
            store = args[0]
            assert isinstance(store, SQLiteStore)
            raise _sqlite_file.fault(store.path, exc) from exc

    return call


class SQLiteStore(SQLStore):
    """The embedded store: one SQLite file shared by any number of local processes.

    With a `codec` (keel.codec), every payload column (`_sealed.TABLES`) is stored
    sealed by it; values stored before read as they are.

    Example:
        >>> store = SQLiteStore("sqlite:///:memory:")  # doctest: +SKIP
    """

    def __init__(self, url: str, codec: PayloadCodec | None = None) -> None:
        self.url = url
        self.codec = codec
        self.path = _path_from_url(url)
        if self.path != ":memory:":
            _sqlite_file.prepare(self.path, upgrade_script(0))
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise _sqlite_file.fault(self.path, exc) from None
        self._s = _SQLiteSession(url, codec, _DIALECT, renderer(_DIALECT), self._db)
        try:
            self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error) and _sqlite_file.is_fault(exc):
                raise _sqlite_file.fault(self.path, exc) from None
            raise

    def _wal(self) -> None:
        # Switching a new file to WAL takes an exclusive lock that SQLite reports as
        # "locked" at once (no busy wait) when several workers start together.
        for pause in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 0.0):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or not pause:
                    raise
                time.sleep(pause)

    def _migrate(self) -> None:
        (version,) = self._db.execute(_DIALECT.version_sql()).fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"store {self.path!r} has schema v{version}, newer than this Keel "
                f"(v{SCHEMA_VERSION}); upgrade Keel"
            )
        if version < SCHEMA_VERSION:
            # executescript manages its own transaction; keep the whole upgrade in one.
            try:
                self._db.executescript(upgrade_script(version))
            except sqlite3.OperationalError:
                # Another process (workers starting together on a new store) may have
                # upgraded it between our version check and our lock: then we are done.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                (now,) = self._db.execute(_DIALECT.version_sql()).fetchone()
                if now < SCHEMA_VERSION:
                    raise

    async def _call(
        self, fn: Callable[Concatenate[Session, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        try:
            return fn(self._s, *args, **kwargs)
        except sqlite3.Error as exc:
            if not _sqlite_file.is_fault(exc):
                raise
            raise _sqlite_file.fault(self.path, exc) from exc

    # The clock statements read: tests of this backend pin it to a literal to move time.
    @property
    def _now_sql(self) -> str:
        return str(self._s.render.cache.get("{now}") or self._s.render("{now}"))

    @_now_sql.setter
    def _now_sql(self, expr: str) -> None:
        self._s.render = renderer(_DIALECT, now=expr)
        self._s._cache = self._s.render.cache

    def wake_feed(self) -> WakeFeed:
        """Other processes' commits, told by `PRAGMA data_version` (_sqlite_wake.py)."""
        from keel.store._sqlite_wake import SQLiteWakeFeed

        return SQLiteWakeFeed(lambda: int(self._db.execute("PRAGMA data_version").fetchone()[0]))

    @_guarded
    async def now(self) -> float:
        (now,) = self._s.execute("SELECT {now}").fetchone()
        return float(now)

    # -- the file's space (docs/storage.md) and encryption at rest ---------------------

    def _space(self) -> StoreSpace:
        def pragma(name: str) -> int:
            return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

        size = pragma("page_size")
        return StoreSpace(
            size_bytes=pragma("page_count") * size,
            free_bytes=pragma("freelist_count") * size,
            shrinks=pragma("auto_vacuum") == 2,  # INCREMENTAL
        )

    @_guarded
    async def reclaim_space(self, full: bool = False) -> StoreSpace:
        if full:
            # VACUUM rewrites the file; the mode set just before takes effect with it.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
        elif (space := self._space()).shrinks and space.free_bytes:
            # One statement frees every free page, one page per step: executescript runs
            # it to the end (execute() would stop after the first page).
            self._db.executescript("PRAGMA incremental_vacuum;")
        # Copy what can be copied from the WAL now, so the file shrinks and the zeroed
        # pages of deleted rows reach it; never waits for readers.
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return self._space()

    @_guarded
    async def rekey(self, batch: int = 500, vacuum: bool = False) -> RekeyCounts:
        """Seal every stored payload with the codec's current key: values under older
        keys and values stored in clear. Counts what it did.

        Each batch is one short write transaction that reads values and rewrites them,
        so a worker writing meanwhile waits a moment and loses nothing. Values already
        under the current key are skipped, so a stopped rekey just runs again.
        Overwritten values are zeroed (secure_delete) and the WAL is truncated after;
        `vacuum` also rewrites the file, dropping what earlier writes left in free
        pages (it blocks writers while it runs).
        """
        codec = self.codec
        if codec is None:
            raise ConfigError(
                "no encryption key is configured, so there is no key to rekey to: set"
                " KEEL_ENCRYPTION_KEY (make a key with: keel store new-key)"
            )
        with self._s.scrubbing():
            done = rekey.reseal(self._s, codec, batch)
            if vacuum:
                await self.reclaim_space(full=True)
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return RekeyCounts(**done, key_id=codec.key_id, wal_truncated=not busy, vacuumed=vacuum)

    @_guarded
    async def close(self) -> None:
        self._db.close()
