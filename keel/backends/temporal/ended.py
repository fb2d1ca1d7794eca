"""What happens when Keel learns that a Temporal run ended: the end is written to Keel's
store, and, the first time only, the run's spans are exported and its drift monitors
observe it (on Keel's engine the same happens in the worker that ends the run).

Example:
    await record_end(app, info, result_json)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.backends.temporal.mirror import end_run

if TYPE_CHECKING:
    from keel.app import App
    from keel.types import RunInfo


async def record_end(app: App, info: RunInfo, result_json: bytes | None) -> bool:
    """Record `info`'s end; True when this call recorded it (and ran the follow-ups)."""
    if not await end_run(app.store, info, result_json):
        return False
    stored = await app.store.get_run(info.id)
    if stored is None:
        return True
    from keel.backends.temporal.tracing import export_ended
    from keel.hitl.sampling import sample_ended

    await export_ended(app, stored)
    await sample_ended(app, stored)  # a sampled review, as Keel's engine's worker opens one
    from keel.drift.observer import OBSERVED, monitors_of

    monitors = monitors_of(app, stored.workflow)
    if monitors and stored.status in OBSERVED:
        await app.drift.observer.observe(stored.id, stored.workflow, monitors)
    return True


__all__ = ["record_end"]
