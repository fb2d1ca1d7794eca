"""`keel worker` (host workers until SIGTERM/Ctrl+C drain them) and `keel workers`."""

from __future__ import annotations

import asyncio
import contextlib
import signal as _signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli._common import BackendOpt, JsonOpt, _fail, _print_json, _run, _with_app
from keel.errors import StoreError

if TYPE_CHECKING:
    from keel.engine.worker import Worker

GraceOpt = Annotated[
    float,
    typer.Option(
        "--grace",
        min=0,
        help="On SIGTERM/Ctrl+C, seconds the steps in flight get to finish (a second signal"
        " stops at once)",
    ),
]


def worker(
    modules: Annotated[list[str], typer.Argument(help="Modules or .py paths defining keel.App")],
    max_runs: Annotated[
        int | None,
        typer.Option(
            "--max-runs",
            "--concurrency",
            "-c",
            min=1,
            help="Runs this worker executes at once; it claims only up to its free run slots,"
            " so work spreads over all workers [default: KEEL_MAX_RUNS or 16]",
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            min=1,
            help="Step effects (tool and model calls) running at once in this process; a step"
            " holds its slot until its outcome is journaled, so a kill repeats at most this"
            " many [default: KEEL_MAX_STEPS or 256]",
        ),
    ] = None,
    grace: GraceOpt = 30.0,
    backend: BackendOpt = None,
) -> None:
    """Execute runs of these modules' workflows until SIGTERM or Ctrl+C (which drain it).

    With --backend URL (or KEEL_BACKEND) it is a Temporal worker: it hosts the module's
    App on the URL's task queue instead (docs/temporal.md).
    """
    from keel.loader import load_app

    async def go() -> None:
        apps = []
        for ref in modules:
            app = load_app(ref)
            if app not in apps:
                apps.append(app)
        if backend is not None or any(a.backend is not None for a in apps):
            await _on_temporal(apps, backend, grace, max_runs, max_steps)
            return
        for a in apps:
            if max_steps is not None:  # set before any step runs: the slots follow it
                a.runtime.settings.max_steps = max_steps
        workers = [a.worker(max_runs) for a in apps]
        every = sorted({n for a in apps for n in a.registry.workflows})
        # Keel's own (memory extraction) are hosted too, but not the user's to count.
        names = [n for n in every if not n.startswith("keel.")]
        builtin = f" + Keel's {', '.join(n for n in every if n.startswith('keel.'))}"
        typer.echo(
            f"keel worker: {len(names)} workflow(s) [{', '.join(names)}]"
            f"{builtin if len(every) > len(names) else ''} on "
            f"{', '.join(sorted({a.store_url for a in apps}))}",
            err=True,
        )
        serving = asyncio.gather(*(w.serve() for w in workers))
        stop = _Shutdown("keel worker", grace, workers, serving)
        stop.install()
        fault: StoreError | None = None
        try:
            await serving
        except asyncio.CancelledError:
            pass
        except StoreError as exc:  # no worker can use the store: all stop, no run fails
            fault = exc
        finally:
            for w in workers:  # a worker that failed leaves the others running otherwise
                await w.stop()
            for a in apps:
                with contextlib.suppress(StoreError):
                    await a.close()
            if fault is None:
                _exit_after(stop.report())
        if fault is not None:
            raise StoreError(
                f"keel worker stopped: {fault.message}. No run was failed for it: its runs"
                " resume when a worker runs again",
                **fault.data,
            )

    _run(go)


async def _on_temporal(
    apps: list[Any], url: str | None, grace: float, max_runs: int | None, max_steps: int | None
) -> None:
    """`keel worker --backend`: one App hosted in a Temporal worker (SIGTERM/Ctrl+C stop it,
    the activities in flight get `grace` seconds)."""
    from keel.backends.temporal.config import Backend
    from keel.backends.temporal.hosting import host

    if len(apps) != 1:
        _fail(
            f"{len(apps)} Apps given: a Temporal worker hosts one App (its generic workflow "
            "serves that App's workflows on one task queue); run one keel worker per App, "
            "each with its own task_queue"
        )
    if max_runs is not None or max_steps is not None:
        _fail(
            "--max-runs and --max-steps size Keel's own worker; on Temporal the worker's "
            "slots are Temporal's (leave them out with --backend)"
        )
    app = apps[0]
    chosen = Backend.from_url(url) if url is not None else app.backend
    try:
        await host(
            app, chosen, grace=grace, say=lambda line: typer.echo(f"keel worker: {line}", err=True)
        )
    finally:
        with contextlib.suppress(StoreError):
            await app.close()
    typer.echo("keel worker: stopped", err=True)


class _Shutdown:
    """SIGTERM/SIGINT for a process hosting workers: the first drains them (steps in
    flight get `grace` seconds to finish, then the runs go back to the queue); a second
    stops at once (runs still go back; their steps in flight may run again)."""

    def __init__(
        self,
        name: str,
        grace: float,
        workers: list[Worker],
        serving: asyncio.Future[Any],
        on_first: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.grace, self.workers, self.serving = name, grace, workers, serving
        self.on_first = on_first
        self.draining: asyncio.Future[list[int]] | None = None
        self.forced = False

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (_signal.SIGINT, _signal.SIGTERM):
            loop.add_signal_handler(sig, self.signalled, sig)

    def signalled(self, sig: int) -> None:
        what = _signal.Signals(sig).name
        if self.draining is None:
            typer.echo(
                f"{self.name}: {what}: draining: no new runs or steps; the steps in flight get"
                f" up to {self.grace:g}s to finish (send it again to stop at once)",
                err=True,
            )
            if self.on_first is not None:
                self.on_first()
            drains = (w.drain(self.grace) for w in self.workers)
            self.draining = asyncio.ensure_future(asyncio.gather(*drains))
        elif not self.forced:
            self.forced = True
            typer.echo(
                f"{self.name}: {what} again: stopping now; runs in flight go back to the queue"
                " and their steps in flight may run again",
                err=True,
            )
            self.draining.cancel()
            self.serving.cancel()

    def report(self) -> int:
        """Say how the stop went; the number of runs whose step in flight was interrupted
        (-1: unknown, a forced stop)."""
        if self.forced:
            return -1
        if self.draining is None or not self.draining.done() or self.draining.cancelled():
            typer.echo(f"{self.name}: stopped; running runs returned to the queue", err=True)
            return 0
        late = sum(self.draining.result())
        if late:
            typer.echo(
                f"{self.name}: the grace of {self.grace:g}s ran out: {late} run(s) were"
                " interrupted mid-step and went back to the queue; those steps may run again",
                err=True,
            )
        else:
            typer.echo(
                f"{self.name}: drained: every step in flight finished and is journaled; their"
                " runs went back to the queue",
                err=True,
            )
        return late


def _exit_after(interrupted: int) -> None:
    """After an interrupted step, exit 0 right here: a sync tool's thread may still be
    running, and asyncio.run would wait for it before returning."""
    if interrupted:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def workers_cmd(
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also workers gone without a clean exit (last day; on Temporal, the"
            " pollers Temporal still remembers)",
        ),
    ] = False,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Live workers: host, pid, the workflows they serve, when last seen.

    On Temporal (--backend or KEEL_BACKEND) the Temporal workers polling the backend's
    task queue are listed too, as Temporal reports them (executor `temporal`).
    """
    import time

    from keel.backends.temporal.pollers import listed_workers

    listed = _run(lambda: _with_app(listed_workers, backend))
    now = time.time()
    shown = [w for w in listed.keel if all_ or w.live(now)]
    temporal = [w for w in listed.temporal if all_ or w.live(now)]
    if as_json:
        _print_json(
            [
                {
                    "executor": "keel",
                    "owner": w.owner,
                    "host": w.host,
                    "pid": w.pid,
                    "workflows": list(w.workflows),
                    "embedded": w.embedded,
                    "started_at": w.started_at,
                    "last_seen": w.seen_at,
                    "live": w.live(now),
                }
                for w in shown
            ]
            + [w.as_json(now) for w in temporal]
        )
        return
    if shown or temporal:
        from keel.console import console, workers_table

        console().print(workers_table(shown, now, temporal))
    if listed.task_queue is not None and not temporal:
        typer.echo(
            f"no Temporal worker polls task queue {listed.task_queue!r}, so runs on it wait;"
            " start one: keel worker MODULE --backend URL"
        )
    elif not shown and not temporal:
        typer.echo("no live workers; start one: keel worker MODULE")
