"""Persistence behind small interfaces; `open_store(url)` picks the backend."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from keel.errors import ConfigError
from keel.store.base import Store
from keel.store.drift import DriftMonitorSpec, DriftStore, DriftValue
from keel.store.evals import EvalCaseResult, EvalResult, EvalStore
from keel.store.identity import IdentityStore
from keel.store.journal import JournalStore
from keel.store.maintenance import MaintenanceStore
from keel.store.memory import MemoryStore
from keel.store.options import StoreOptions
from keel.store.people import PeopleStore
from keel.store.records import (
    AuditEntry,
    Claimed,
    ConsoleSession,
    KeywordHit,
    MemoryExtract,
    MemoryNamespace,
    MemoryRow,
    Purged,
    PurgeScope,
    RekeyCounts,
    RunFilter,
    SpanRecord,
    StepWrite,
    StoreSpace,
    Usage,
    UsageGroup,
    User,
    WorkerBeat,
)
from keel.store.spans import SpanStore
from keel.store.unit import Committed, UnitOfWork
from keel.store.usage import UsageStore
from keel.types import Escalation, ReviewRequest

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

DEFAULT_URL = "sqlite:///.keel/keel.db"

__all__ = [
    "DEFAULT_URL",
    "AuditEntry",
    "Claimed",
    "Committed",
    "ConsoleSession",
    "DriftMonitorSpec",
    "DriftStore",
    "DriftValue",
    "Escalation",
    "EvalCaseResult",
    "EvalResult",
    "EvalStore",
    "IdentityStore",
    "JournalStore",
    "KeywordHit",
    "MaintenanceStore",
    "MemoryExtract",
    "MemoryNamespace",
    "MemoryRow",
    "MemoryStore",
    "PeopleStore",
    "PurgeScope",
    "Purged",
    "RekeyCounts",
    "ReviewRequest",
    "RunFilter",
    "SpanRecord",
    "SpanStore",
    "StepWrite",
    "Store",
    "StoreOptions",
    "StoreSpace",
    "UnitOfWork",
    "Usage",
    "UsageGroup",
    "UsageStore",
    "User",
    "WorkerBeat",
    "open_store",
]


def open_store(
    url: str, codec: PayloadCodec | None = None, options: StoreOptions | None = None
) -> Store:
    """Open the store at `url` (`sqlite:///relative.db`, `sqlite:////abs/path.db`,
    `postgresql://user:pass@host/db`); with `codec`, every payload is stored sealed by it
    (keel.codec); `options` are Postgres's connection settings (`keel.config.store_options()`
    reads them from KEEL_* and keel.toml; defaults without)."""
    if url.startswith("sqlite:"):
        from keel.store.sqlite import SQLiteStore

        return SQLiteStore(url, codec)
    if url.startswith(("postgresql:", "postgres:")):
        store: Store = postgres_backend().PostgresStore(url, codec, options)
        return store
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ConfigError(
        f"unsupported store URL {url!r} (scheme {scheme!r}); use sqlite:///path/to/keel.db"
        " (the default is sqlite:///.keel/keel.db) or postgresql://user:pass@host/db"
    )


def postgres_backend() -> ModuleType:
    """The `keel.store.postgres` module, imported on first use (psycopg is an optional
    extra, and `import keel` stays fast without it); a ConfigError naming the extra
    when psycopg is not installed."""
    try:
        import keel.store.postgres as backend
    except ImportError as exc:
        if exc.name not in ("psycopg", "psycopg_pool"):
            raise
        raise ConfigError(
            f"a Postgres store needs psycopg ({exc.name} is not installed):"
            " pip install 'keel[postgres]'"
        ) from None
    return backend
