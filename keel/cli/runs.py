"""Runs: `keel run`, `keel runs` (and `runs purge`), `show`, `trace`, `costs`, `signal`,
`cancel`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keel.cli._common import (
    _JSON_HELP,
    EXIT_FAILED,
    BackendOpt,
    JsonOpt,
    _fail,
    _json_arg,
    _print_json,
    _resume_notice,
    _run,
    _store_app,
    _with_app,
)
from keel.engine.hooks import Hooks
from keel.errors import KeelError, StoreError


def run(
    target: Annotated[str, typer.Argument(help="MODULE:WORKFLOW, MODULE a module or .py path")],
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help=f"JSON object of inputs: {_JSON_HELP}"),
    ] = None,
    id: Annotated[str | None, typer.Option("--id", help="Run id (idempotent start)")] = None,
    session: Annotated[
        str | None,
        typer.Option("--session", help="Session id: its runs share ctx.session state"),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Enqueue only; a worker runs it")
    ] = False,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a run; without --detach, execute it here until it ends or suspends.

    On Temporal (--backend or KEEL_BACKEND) a Temporal worker executes it (keel worker
    MODULE --backend URL): without --detach this waits until it ends or suspends.
    """
    from keel.app import App  # noqa: F401 - import errors surface before the run starts
    from keel.loader import load_workflow

    data = _json_arg(input, "--input")
    if data is not None and not isinstance(data, dict):
        _fail(f"--input must be a JSON object of the workflow's inputs, got {type(data).__name__}")

    async def go() -> Any:
        app, wf = load_workflow(target)
        if backend is not None:  # the module's App, its runs sent to this backend
            from keel.backends.temporal.config import Backend

            app.backend = Backend.from_url(backend)
        progress = None if (as_json or detach or app.backend) else _MapProgress()
        if progress:
            app.hooks.add(progress)
        try:
            # Recorded first: a store fault after that leaves a run to resume, not lost.
            handle = await app.start(wf, data, id=id, execute=False, session=session)
            try:
                if not detach and app.backend is None:
                    await app.start(wf, id=handle.id)  # attach: the embedded worker runs it
                elif not detach:  # nothing here executes it: say what does
                    typer.echo(
                        f"run {handle.id} started on {app.backend.url}; a Temporal worker"
                        " executes it (keel worker MODULE --backend URL)",
                        err=True,
                    )
                info = await handle.info() if detach else await handle.settle()
            except StoreError as exc:  # the run is recorded: say it was not failed
                raise type(exc)(
                    f"{exc.message}. Run {handle.id} was not failed: it resumes from its"
                    " journal when a worker takes it (keel worker), or run it again with"
                    f" --id {handle.id}",
                    **{**exc.data, "run_id": handle.id},
                ) from None
        finally:
            if progress:
                progress.close()
            await app.close()
        return app.redactor.run(info)

    info = _run(go)
    if as_json:
        _print_json(info.summary())
    else:
        from keel.console import console, short, status_text

        out = console()
        out.print("run", info.id, status_text(info.status))
        if info.status.value == "WAITING":
            out.print(_waiting_hint(info.id, info.waiting_on))
        elif info.result is not None:
            out.print(short(info.result, 600))
        if info.error is not None:
            out.print(f"[red]{info.error.type}: {info.error.message}[/red]")
    if info.status.value in ("FAILED", "CANCELLED"):
        raise typer.Exit(EXIT_FAILED)


def _waiting_hint(run_id: str, waiting_on: list[str]) -> str:
    if not waiting_on:
        return "waiting on a timer; a worker resumes it when it is due (keel worker MODULE)"
    reviews = [w.split(":", 1)[1] for w in waiting_on if w.startswith("review:")]
    if reviews:
        return (
            f"waiting for a person's decision on {reviews[0]}; "
            f"see: keel approvals show {reviews[0]}"
        )
    escalations = [w.split(":", 1)[1] for w in waiting_on if w.startswith("escalation:")]
    if escalations:
        return (
            f"waiting for a person to decide escalation {escalations[0]}; "
            f"see: keel escalations show {escalations[0]}"
        )
    return f"waiting on {', '.join(waiting_on)}; resume with: keel signal {run_id} {waiting_on[0]}"


class _MapProgress(Hooks):
    """A Rich progress bar per fan-out while `keel run` executes."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}
        self._progress: Any = None

    def map_progress(self, run_id: str, key: str, done: int, total: int) -> None:
        if self._progress is None:
            from rich.progress import Progress

            self._progress = Progress(transient=False, console=None)
            self._progress.start()
        if key not in self._bars:
            self._bars[key] = self._progress.add_task(key, total=total)
        self._progress.update(self._bars[key], completed=done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


runs_cli = typer.Typer(
    help="List runs, newest first; keel runs purge deletes ended ones past a retention.",
    invoke_without_command=True,
)


@runs_cli.callback()
def runs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help="PENDING, RUNNING, WAITING, SUCCEEDED, FAILED or CANCELLED"
        ),
    ] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Created at or after: ISO 8601 (UTC if naive) or epoch s"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Created before: ISO 8601 (UTC if naive) or epoch s"),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Only the runs of this session")
    ] = None,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first (keel runs purge --help: delete old ended runs).

    On Temporal (--backend or KEEL_BACKEND) statuses come from Temporal, and runs on the
    backend's task queue that Keel's store lacks are listed too (docs/temporal.md).
    """
    if ctx.invoked_subcommand is not None:
        return
    from keel.server.timeparse import parse_time
    from keel.types import RunStatus

    st = None
    if status is not None:
        try:
            st = RunStatus(status.upper())
        except ValueError:
            _fail(f"unknown status {status!r}; use one of {', '.join(s.value for s in RunStatus)}")
    try:
        start = None if since is None else parse_time(since, "--since")
        end = None if until is None else parse_time(until, "--until")
    except KeelError as exc:
        _fail(exc.message)
        return

    async def go() -> Any:
        app = _store_app(backend)
        try:
            found = await app.list_runs(
                st, workflow, limit, since=start, until=end, session=session
            )
        finally:
            await app.close()
        return [app.redactor.run(r) for r in found]

    found = _run(go)
    if as_json:
        _print_json([r.summary() for r in found])
        return
    from keel.console import console, runs_table

    console().print(runs_table(found))


@runs_cli.command("purge")
def runs_purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Runs that ended at least this long ago: 30d, 12h, 90m, 45s, 2w"
        ),
    ],
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", help="Only runs that ended so: SUCCEEDED, FAILED, CANCELLED (repeat)"
        ),
    ] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; change nothing.")
    ] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum",
            help="Then rewrite the store to give its free space back (holds the write lock"
            " while it runs; later purges shrink it by themselves).",
        ),
    ] = False,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=10_000, help="Runs per transaction")
    ] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Delete ended runs past a retention, with everything that is theirs.

    A run goes with its journal, signals, blobs no other run shares, spans,
    requests, escalations and usage (kept as per-day totals for keel costs).
    PENDING, RUNNING and WAITING runs are never purged. Workers may keep
    running: it deletes in small transactions. See docs/storage.md.
    """
    import dataclasses
    import time

    from keel.server.timeparse import parse_duration
    from keel.store.records import ENDED, PurgeScope
    from keel.types import RunStatus

    try:
        seconds = parse_duration(older_than, "--older-than")
    except KeelError as exc:
        _fail(exc.message)
        return
    statuses: list[RunStatus] = []
    for given in status or []:
        st = next((s for s in RunStatus if s.value == given.upper()), None)
        if st is None or not st.terminal:
            what = "not a run status" if st is None else "not an ended status"
            _fail(
                f"--status {given!r} is {what}: only ended runs are purged;"
                f" use {', '.join(s.value for s in ENDED)}"
            )
            return
        statuses.append(st)
    if vacuum and dry_run:
        _fail("--vacuum changes the store, --dry-run changes nothing: use one of them")
    now = time.time()
    scope = PurgeScope(
        ended_before=now - seconds,
        statuses=tuple(dict.fromkeys(statuses)) or ENDED,
        workflow=workflow,
    )

    async def go(app: Any) -> Any:
        from keel.maintenance import Maintenance

        upkeep = Maintenance(app)
        done = await upkeep.purge(scope, now, batch=batch, dry_run=dry_run)
        return done, await upkeep.reclaim_space(full=vacuum) if not dry_run else None

    done, space = _run(lambda: _with_app(go))
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "older_than": older_than,
                "ended_before": scope.ended_before,
                "statuses": [s.value for s in scope.statuses],
                "workflow": workflow,
                "purged": done.counts(),
                "store": None if space is None else dataclasses.asdict(space),
            }
        )
        return
    from keel.console import purge_report

    typer.echo(purge_report(done, scope, older_than, dry_run, space))


def show(
    run_id: str,
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="MODULE",
            help="Module or .py path defining the run's App: its state model gives the "
            "state the run started with (otherwise inferred from the final state); on "
            "Temporal its code lists the steps a running run's workflow decided (timers, "
            "signals, values; an ended run has them in the store).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Payloads as journaled, secrets included (default: masked by the redactor "
            "of --app's App, else keel.toml's [keel.redact])",
        ),
    ] = False,
    backend: BackendOpt = None,
) -> None:
    """Show a run and its journal as a tree (status, attempts, timings, state changes).

    `state: a, b` on a step names the state fields the workflow changed after that step,
    before its next one; --json gives each step `state_changed` and `state_after`.
    Inputs, outputs, state and errors are shown redacted unless --raw.
    """
    from keel.loader import load_app
    from keel.observe.journal_view import journal_view, starting_state

    try:
        user_app = None if app_ref is None else load_app(app_ref)
    except KeelError as exc:
        _fail(exc.message)

    async def go() -> Any:
        app = _store_app(backend)
        if user_app is not None:  # its code replays a Temporal run: the steps it decided
            app.registry = user_app.registry
        try:
            return await app.get_run(run_id), await app.steps(run_id), app.redactor
        finally:
            await app.close()

    info, steps, redactor = _run(go)
    initial, fields = None, None
    if user_app is not None:
        registry, redactor = user_app.registry, user_app.redactor
        if info.workflow not in registry.workflows:
            known = ", ".join(sorted(registry.workflows)) or "none"
            _fail(
                f"{app_ref} has no workflow {info.workflow!r} (run {run_id}'s workflow); "
                f"registered: {known}"
            )
        initial, fields = starting_state(registry, info.workflow)
    if not raw:
        info, steps = redactor.run(info), [redactor.step(s) for s in steps]
        initial = redactor.value(initial)
    view = journal_view(info, steps, initial, fields)
    if as_json:
        from keel.console import run_json

        _print_json(run_json(info, steps, view))
        return
    from keel.console import console, run_detail

    console().print(run_detail(info, steps, view))


def trace(run_id: str, backend: BackendOpt = None, as_json: JsonOpt = False) -> None:
    """Show a run's trace: the span tree with durations, status, tokens and cost."""
    spans = _run(lambda: _with_app(lambda app: app.trace(run_id), backend))
    if as_json:
        from keel.observe.ids import hex_span, hex_trace

        _print_json(
            [
                {
                    "trace_id": hex_trace(s.trace_id),
                    "span_id": hex_span(s.span_id),
                    "parent_id": hex_span(s.parent_id) if s.parent_id else None,
                    "name": s.name,
                    "kind": s.kind,
                    "start_ns": s.start_ns,
                    "end_ns": s.end_ns,
                    "status": s.status,
                    "status_message": s.status_message,
                    "attributes": s.attributes,
                    "events": s.events,
                    "links": [hex_span(x) for x in s.links],
                }
                for s in spans
            ]
        )
        return
    if not spans:
        _fail(
            f"run {run_id} has no spans yet (tracing off, or nothing recorded so far)",
            EXIT_FAILED,
        )
    from keel.console import console, trace_tree

    console().print(trace_tree(spans))


def costs(
    by: Annotated[
        str, typer.Option("--by", help="run, workflow, tenant, model or step")
    ] = "workflow",
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO date or time (UTC)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokens and model cost, grouped by run, workflow, tenant, model or step."""
    start = None
    if since is not None:
        from datetime import UTC, datetime

        try:
            parsed = datetime.fromisoformat(since)
        except ValueError:
            _fail(f"--since {since!r} is not an ISO date or time (e.g. 2026-11-25)")
            return
        start = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    from keel.llm.costs import Costs

    rows = _run(
        lambda: _with_app(
            lambda app: Costs(app).report(by, workflow=workflow, tenant=tenant, since=start)
        )
    )
    if as_json:
        _print_json([r.as_dict() for r in rows])
        return
    from keel.console import console, costs_table

    console().print(costs_table(rows, by))


def signal_cmd(
    run_id: str,
    name: str,
    payload: Annotated[
        str | None, typer.Option("--payload", "-p", help=f"JSON payload: {_JSON_HELP}")
    ] = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Keep the signal for the run's next ctx.wait_for(NAME) even if the run"
            " is not waiting for it now",
        ),
    ] = False,
    backend: BackendOpt = None,
) -> None:
    """Send a signal to a run waiting for it (the run resumes).

    A run not waiting for NAME refuses it and says what it waits for; --queue keeps it
    for a later wait instead. An ended run refuses every signal.
    """
    data = _json_arg(payload, "--payload")

    async def go() -> Any:
        app = _store_app(backend)
        try:
            resumes = await app.signal(run_id, name, data, queue=queue)
            if resumes and app.backend is not None:  # Keel's presence table has no Temporal workers
                return True, "a Temporal worker of its task queue resumes it"
            if resumes:
                return True, (await _resume_notice(app, run_id)).message
            return False, await app.get_run(run_id)
        finally:
            await app.close()

    resumes, then = _run(go)
    if resumes:  # then: whether a live worker takes the run on
        typer.echo(f"signal {name!r} delivered to {run_id}; {then}")
    else:  # then: the run, not waiting for it yet
        typer.echo(
            f"signal {name!r} queued for {run_id} ({then.status.value}): its next"
            f" ctx.wait_for({name!r}) takes it"
        )


def cancel(run_id: str, backend: BackendOpt = None) -> None:
    """Cancel a run that has not finished (on Temporal: Temporal's cancellation)."""

    async def go() -> Any:
        app = _store_app(backend)
        try:
            before = await app.get_run(run_id)
            if before.status.terminal:
                return before, False
            return await app.cancel(run_id), True
        finally:
            await app.close()

    info, cancelled = _run(go)
    if cancelled and not info.status.terminal:  # on Temporal: its worker has not acted yet
        typer.echo(
            f"run {run_id}: cancellation requested; it ends CANCELLED once its Temporal"
            " worker handles it (keel runs shows when)"
        )
        return
    if not cancelled or info.status.value != "CANCELLED":
        _fail(
            f"run {run_id} had already ended {info.status.value}; nothing to cancel",
            EXIT_FAILED,
        )
    typer.echo(f"run {run_id} cancelled")
