"""Where a person's decision goes when the run that asked is not on Keel's engine.

On Keel's engine a decision is a signal written to the store with it (one transaction).
A run another executor runs (Temporal: the App's `backend`) is sent the decision by that
executor's route, which may refuse it (`keel.InputError`, `keel.Conflict`) before
anything is recorded, exactly as Keel's engine refuses the same decision.
"""

from __future__ import annotations

from typing import Any, Protocol

from keel.errors import ConfigError
from keel.types import RunInfo

# Lease owner of the runs another executor runs -> its name. Temporal's is
# keel.backends.temporal.mirror.OWNER (this layer cannot import it;
# tests/test_temporal_people.py checks they agree).
_ELSEWHERE = {"temporal": "Temporal"}


def executed_elsewhere(run: RunInfo) -> str | None:
    """The executor that runs `run` when it is not Keel's engine (e.g. "Temporal").

    Example:
        executed_elsewhere(await app.get_run(run_id))  # "Temporal", or None
    """
    return _ELSEWHERE.get(run.lease_owner or "")


class DecisionRoute(Protocol):
    """An executor that takes decisions for the runs it executes (a Temporal Backend).

    Example:
        taken = await app.backend.deliver_decision(app, run_id, review_id, decision)
    """

    async def deliver_decision(
        self, host: Any, run_id: str, target: str, decision: dict[str, Any]
    ) -> bool:
        """Send `decision` on request `target` to run `run_id`; False if not its run."""
        ...


async def deliver_elsewhere(host: Any, run_id: str, target: str, decision: dict[str, Any]) -> bool:
    """Hand `decision` (its full payload: status, by, ...) to the executor running
    `run_id` when that is not Keel's engine; True if it took it, False for a run on
    Keel's engine. Raises what the run refuses it with.

    Example:
        if not await deliver_elsewhere(app, req.run_id, req.id, payload):
            ...  # Keel's engine: a signal written with the decision
    """
    route = getattr(host, "backend", None)
    deliver = getattr(route, "deliver_decision", None)
    if deliver is not None:
        return bool(await deliver(host, run_id, target, decision))
    run = await host.store.get_run(run_id)
    where = None if run is None or run.status.terminal else executed_elsewhere(run)
    if where is not None:
        raise ConfigError(
            f"run {run_id} runs on {where}, and this App has no backend to send "
            f"the decision on {target} to it: pass keel.App(backend=...) or set KEEL_BACKEND "
            "(the one its workers use), then decide again"
        )
    return False


__all__ = ["DecisionRoute", "deliver_elsewhere", "executed_elsewhere"]
