"""SQLite backend: the zero-setup default.

`SQLiteStore` is composed of one class per concern over a shared core, each in its own
module, along the lines of the interfaces (`keel.store.journal`, `people`, `usage`,
`spans`, `identity`, `maintenance`):

- `_sqlite_core.py`: the connection, one transaction per call, payload sealing, row
  decoding, the database clock (`NOW_SQL`), and the writes concerns share (lease check,
  journal entries with their usage, reviews, escalations, signal delivery, audit)
- `_sqlite_schema.py`: the schema and its migrations
- `_sqlite_runs.py`: runs and their journals (`commit`), queue leases, timers, signals
- `_sqlite_reviews.py`: requests to people (reviews, escalations) and the audit log
- `_sqlite_usage.py`: metered usage (budgets, cost reports) and the response cache
- `_sqlite_spans.py`: spans (the local trace store)
- `_sqlite_identity.py`: console users and sessions, worker heartbeats
- `_sqlite_retention.py`: purges, and giving freed space back
- `_sqlite_rekey.py`: encryption at rest (rekey, which key sealed what)

`_sqlite_file.py` creates the file and explains its faults; `_sealed.py` is the sealed
payload's envelope.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable
from typing import Any

from keel.store import _sqlite_file
from keel.store._sqlite_identity import SQLiteIdentity
from keel.store._sqlite_rekey import SQLiteRekey
from keel.store._sqlite_retention import SQLiteRetention
from keel.store._sqlite_reviews import SQLiteReviews
from keel.store._sqlite_runs import SQLiteRuns
from keel.store._sqlite_spans import SQLiteSpans
from keel.store._sqlite_usage import SQLiteUsage
from keel.store.base import Store


class SQLiteStore(
    SQLiteRuns,
    SQLiteReviews,
    SQLiteUsage,
    SQLiteSpans,
    SQLiteIdentity,
    SQLiteRetention,
    SQLiteRekey,
):
    """The embedded store: one SQLite file shared by any number of local processes.

    With a `codec` (keel.codec), every payload column (`_sealed.TABLES`) is stored
    sealed by it; values stored before read as they are.
    """


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if not _sqlite_file.is_fault(exc):
                raise
            raise _sqlite_file.fault(self.path, exc) from exc

    return call


# Every public operation reports a file or disk fault as one StoreError (path, cause,
# what to do), never as a raw sqlite3 error from somewhere inside.
_OWN = SQLiteStore.__mro__[: SQLiteStore.__mro__.index(Store)]
for _name in dict.fromkeys(n for cls in _OWN for n in vars(cls) if not n.startswith("_")):
    _fn = getattr(SQLiteStore, _name)
    if inspect.iscoroutinefunction(_fn):
        setattr(SQLiteStore, _name, _guarded(_fn))
