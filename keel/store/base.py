"""The store every backend implements: one object made of the interfaces by concern
(`journal.py`, `people.py`, `usage.py`, `spans.py`, `identity.py`, `maintenance.py`,
`session_state.py`, `evals.py`, `drift.py`),
with helpers every backend shares. Records live in `records.py`, the unit of work in
`unit.py`; `keel.store` exports them all."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from keel.errors import SignalRefused
from keel.store.drift import DriftStore
from keel.store.evals import EvalStore
from keel.store.identity import IdentityStore
from keel.store.journal import JournalStore
from keel.store.maintenance import MaintenanceStore
from keel.store.memory import MemoryStore
from keel.store.people import PeopleStore
from keel.store.session_state import SessionStateStore
from keel.store.spans import SpanStore
from keel.store.usage import UsageStore
from keel.types import RunInfo, RunStatus

if TYPE_CHECKING:
    from keel.codec import PayloadCodec

# Records used to live here; `from keel.store.base import StepWrite` keeps working.
__all__ = ["RESERVED_SIGNALS", "Store", "audit_detail", "signal_refused"]


def audit_detail(decision: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a person's decision: which fields it had and which
    tool arguments an edit changed, never their values.

    The decision itself (arguments, outputs, labels, notes) lives in the request and the
    run's journal, and goes when the run is purged; the audit log is append-only and
    kept, so it holds no payload (docs/storage.md). Not even a digest of one: a digest
    of a guessable value (an amount, a yes/no label) gives the value away.
    """
    out: dict[str, Any] = {"fields": sorted(k for k, v in decision.items() if v is not None)}
    args, original = decision.get("args"), decision.get("original")
    if isinstance(args, dict) and isinstance(original, dict):
        out["changed"] = sorted(
            k for k in {*args, *original} if args.get(k, ...) != original.get(k, ...)
        )
    return out


class Store(
    JournalStore,
    PeopleStore,
    UsageStore,
    SpanStore,
    IdentityStore,
    MaintenanceStore,
    MemoryStore,
    SessionStateStore,
    EvalStore,
    DriftStore,
):
    """A whole store: every interface by concern over one database.

    Callers that need one concern should type against it (`JournalStore`, ...); the
    `App` holds a `Store`. `keel.store.open_store(url, codec)` opens one.

    Example:
        store = open_store("sqlite:///.keel/keel.db")
        try:
            run = await store.get_run("run_1")
        finally:
            await store.close()
    """

    url: str
    # Seals every payload stored, opens it when read (keel.codec); None: stored in clear.
    codec: PayloadCodec | None = None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's connections; the object is unusable after."""


# Signals Keel sends itself when a person decides a review or an escalation.
RESERVED_SIGNALS = ("review:", "escalation:")


def signal_refused(run: RunInfo, name: str, queued: int) -> SignalRefused:
    """Why `run` does not take signal `name` now, and what to do (`queued`: how many
    `name` signals it has not taken yet). Shared by every backend's `send_signal`."""
    data: dict[str, Any] = {
        "run_id": run.id,
        "signal": name,
        "status": run.status.value,
        "waiting_on": list(run.waiting_on) if run.status is RunStatus.WAITING else [],
    }
    if run.status.terminal:
        return SignalRefused(
            f"run {run.id} is already {run.status.value}; signal {name!r} was not delivered"
            " (an ended run takes no signals)",
            **data,
        )
    later = (
        f"or pass queue=True (keel signal --queue) to keep {name!r} for a later"
        f" ctx.wait_for({name!r})"
    )
    if queued:
        return SignalRefused(
            f"run {run.id} has not taken the {name!r} signal sent before ({queued} waiting),"
            f" so this one would only reach a later ctx.wait_for({name!r}): pass queue=True"
            " (keel signal --queue) if the workflow waits for it again",
            queued=queued,
            **data,
        )
    if run.status is not RunStatus.WAITING:
        return SignalRefused(
            f"run {run.id} is {run.status.value}, not waiting for a signal now, so"
            f" {name!r} could not be taken yet: retry once it waits for it, {later}",
            **data,
        )
    signals = [w for w in run.waiting_on if not w.startswith(RESERVED_SIGNALS)]
    people = [w for w in run.waiting_on if w.startswith(RESERVED_SIGNALS)]
    if signals:
        waits = f"it waits for {', '.join(repr(w) for w in signals)}. Send one of those"
    elif people:
        waits = (
            f"it waits for a person's decision ({', '.join(people)}). Decide it with"
            " keel approvals / keel escalations"
        )
    else:
        waits = "it waits for a timer only. Let it run on"
    return SignalRefused(
        f"run {run.id} is not waiting for signal {name!r}: {waits}, {later}",
        **data,
    )
