"""`SessionStateStore`: key-value state shared by the runs of one session (`ctx.session`).

Keel's store implements it (table `session_kv`, SQL in `keel/store/sql/session_state.py`)
and so does Redis (`keel/store/redis_session.py`). Values are JSON text; the caller
(`keel.memory.session`) encodes and decodes them.

Every write names its writer (run id + operation key). A write is idempotent on it: the
backend keeps a receipt of each applied write, so a write re-executed after a crash
(its effect landed, its journal entry did not) applies nothing again and reports that
it applied, even if another run changed the key in between.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

# How long a write's receipt is kept. It only matters between a write and its journal
# entry, i.e. until a crashed run resumes (seconds to hours); a week is ample.
RECEIPT_TTL = 7 * 86400.0

# Receipts live beside the values of their session under keys no user key can take
# (user keys refuse control characters): U+001F is one.
RECEIPT_PREFIX = "\x1freceipt\x1f"


class Expect(enum.Enum):
    """`expect=ANY`: write whatever the key holds now."""

    ANY = "any"


ANY = Expect.ANY


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """A live value of a session key.

    Example:
        entry = await store.session_get("user-42", "cart")  # SessionEntry('[1]', 'r1/...', 1)
    """

    value: str  # JSON text
    writer: str  # the write that set it (run id + operation key): unique per write
    version: int  # 1 for the first write of the key, +1 per write since


class SessionStateStore(abc.ABC):
    """Session key-value state: get, and one conditional, idempotent write.

    Example:
        await store.session_write("s1", "n", "1", writer="r1/session.set#0")
        entry = await store.session_get("s1", "n")
        won = await store.session_write("s1", "n", "2", writer="r2/..", expect=entry.writer)
    """

    @abc.abstractmethod
    async def session_get(self, session: str, key: str) -> SessionEntry | None:
        """The live value of `key` in `session` (None: absent or expired)."""

    @abc.abstractmethod
    async def session_write(
        self,
        session: str,
        key: str,
        value: str | None,
        *,
        writer: str,
        ttl: float | None = None,
        expect: str | Expect | None = ANY,
    ) -> bool:
        """Set `key` to `value` (JSON text; None deletes it), expiring `ttl` seconds from
        now on the backend's clock (None: never), atomically, and whether it applied.

        `expect` is the condition: ANY (always applies; a delete applies when the key
        was there), None (only if the key is absent or expired), or a writer (only if
        the live value is the one that writer set). A write whose `writer` already
        applied returns True and changes nothing.
        """

    @abc.abstractmethod
    async def session_applied(self, session: str, writer: str) -> bool:
        """Whether a write by `writer` applied in `session` (its receipt is kept)."""


__all__ = ["ANY", "RECEIPT_TTL", "Expect", "SessionEntry", "SessionStateStore"]
