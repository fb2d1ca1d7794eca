"""The features an App plugs into a Temporal run: `ctx.llm`, `ctx.memory`, `ctx.session`.

The same feature code as on Keel's engine (keel/features.py fills the engine's doors);
their steps are `ctx.operation`s, which the Temporal port runs as local activities
(keel.backends.temporal.operation). Requests to people (approvals, gated tools, output
reviews) go through keel.backends.temporal.people.

Example:
    port = TemporalExecution(run, app.registry.tools, signals, root, features_for(app))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.backends.temporal.people import TemporalPeople
from keel.backends.temporal.port import not_yet
from keel.engine.plugins import Features
from keel.errors import ConfigError

if TYPE_CHECKING:
    from temporalio.client import Client

    from keel.app import App


def features_for(app: App, client: Client | None = None, task_queue: str = "") -> Features:
    """`app`'s features over a Temporal run; `client` and `task_queue` start the runs a
    workflow starts (memory extraction). Without them (a Replayer) those refuse."""
    people = TemporalPeople()

    def models(ctx: Any) -> Any:
        gateway = app.gateway
        if gateway is None:
            raise ConfigError(
                "this app has no model configured: pass keel.App(llm=keel.llm.Gateway(...)) "
                "or a keel.llm.ScriptedModel, or set KEEL_MODEL"
            )
        from keel.llm.facade import LLM

        return LLM(ctx, gateway, store=app.store, people=people)

    def memory(ctx: Any) -> Any:
        from keel.memory.journaled import JournaledMemory

        async def extract(run_id: str, payload: dict[str, Any], session: str | None) -> str:
            # runs in the `keel.op` local activity (an effect): it may start a workflow
            if client is None:
                not_yet("ctx.memory.extract outside a serving worker")
            from keel.backends.temporal.worker import start_run
            from keel.features import EXTRACTION

            return await start_run(
                app, client, task_queue, EXTRACTION, payload, run_id=run_id, session=session
            )

        return JournaledMemory(ctx, app.memory, extract)

    def session(ctx: Any) -> Any:
        from keel.memory.session import SessionState

        return SessionState(ctx, app.session_store)

    return Features(models=models, people=people, memory=memory, session=session)


__all__ = ["features_for"]
