"""The `keel` command: run workflows, host workers, inspect and steer runs.

Every error is one line on stderr, `error: <what is wrong and what to do>`, and the
exit code says which kind (README "Exit codes"): 0 done, 1 the run failed or was
cancelled (or there was nothing to act on), 2 a usage or input error, 3 the store
cannot be opened, read or written, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal as _signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from keel.engine.hooks import Hooks
from keel.errors import KeelError, StoreError

T = TypeVar("T")

EXIT_FAILED = 1  # the run FAILED or was CANCELLED, or there was nothing to act on
EXIT_USAGE = 2  # bad arguments, input, configuration, or a request the run refuses
EXIT_STORE = 3  # the store cannot be opened, read or written (corrupt, read-only, full)
EXIT_INTERRUPTED = 130  # Ctrl+C (Typer/Click already exit 130 on KeyboardInterrupt)


def _exit_code(exc: KeelError) -> int:
    return EXIT_STORE if isinstance(exc, StoreError) else EXIT_USAGE


class _OneLineErrors(TyperGroup):
    """Usage errors as one line (`error: ...; see: keel run --help`), not a boxed panel."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except KeelError as exc:  # e.g. a bad KEEL_* setting met while parsing
            typer.echo(f"error: {exc.message}", err=True)
            sys.exit(_exit_code(exc))
        except Exception as exc:
            names = {c.__name__ for c in type(exc).__mro__}
            if "NoArgsIsHelpError" in names:  # `keel` alone: the help, as usual
                exc.show()  # type: ignore[attr-defined]
                sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
            if "ClickException" not in names and "Abort" not in names:
                raise
            if "Abort" in names:  # Ctrl+C or end of input at a prompt
                typer.echo("error: interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            message = " ".join(exc.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            hint = f"; see: {ctx.command_path} --help" if ctx is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
        sys.exit(code if isinstance(code, int) else 0)


cli = typer.Typer(
    name="keel",
    cls=_OneLineErrors,
    help="Durable agentic workflows: run, inspect and steer them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
_JSON_HELP = "inline, @file.json, or - for stdin"


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _json_arg(value: str | None, what: str) -> Any:
    """A JSON option's value: inline JSON, `@file.json` or `-` (stdin), within the limits."""
    from keel._json_input import read_json

    if value is None:
        return None
    try:
        return read_json(value, what)
    except KeelError as exc:
        _fail(exc.message, _exit_code(exc))
    return None


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except KeelError as exc:
        _fail(exc.message, _exit_code(exc))
    raise AssertionError("unreachable")


def _store_app() -> Any:
    from keel.app import App

    return App()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@cli.command()
def run(
    target: Annotated[str, typer.Argument(help="MODULE:WORKFLOW, MODULE a module or .py path")],
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help=f"JSON object of inputs: {_JSON_HELP}"),
    ] = None,
    id: Annotated[str | None, typer.Option("--id", help="Run id (idempotent start)")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Enqueue only; a worker runs it")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a run; without --detach, execute it here until it ends or suspends."""
    from keel.app import App  # noqa: F401 - import errors surface before the run starts
    from keel.loader import load_workflow

    data = _json_arg(input, "--input")
    if data is not None and not isinstance(data, dict):
        _fail(f"--input must be a JSON object of the workflow's inputs, got {type(data).__name__}")

    async def go() -> Any:
        app, wf = load_workflow(target)
        progress = None if (as_json or detach) else _MapProgress()
        if progress:
            app.hooks.add(progress)
        try:
            handle = await app.start(wf, data, id=id, execute=not detach)
            info = await handle.info() if detach else await handle.settle()
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


GraceOpt = Annotated[
    float,
    typer.Option(
        "--grace",
        min=0,
        help="On SIGTERM/Ctrl+C, seconds the steps in flight get to finish (a second signal"
        " stops at once)",
    ),
]


@cli.command()
def worker(
    modules: Annotated[list[str], typer.Argument(help="Modules or .py paths defining keel.App")],
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1)] = None,
    grace: GraceOpt = 30.0,
) -> None:
    """Execute runs of these modules' workflows until SIGTERM or Ctrl+C (which drain it)."""
    from keel.loader import find_app, load_module

    async def go() -> None:
        apps = []
        for ref in modules:
            app = find_app(load_module(ref), ref)
            if app not in apps:
                apps.append(app)
        workers = [a.worker(concurrency) for a in apps]
        names = sorted(n for a in apps for n in a.registry.workflows)
        typer.echo(
            f"keel worker: {len(names)} workflow(s) [{', '.join(names)}] on "
            f"{', '.join(sorted({a.store_url for a in apps}))}",
            err=True,
        )
        serving = asyncio.gather(*(w.serve() for w in workers))
        stop = _Shutdown("keel worker", grace, lambda g: [w.drain(g) for w in workers], serving)
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


class _Shutdown:
    """SIGTERM/SIGINT for a process hosting workers: the first drains them (steps in
    flight get `grace` seconds to finish, then the runs go back to the queue); a second
    stops at once (runs still go back; their steps in flight may run again)."""

    def __init__(
        self,
        name: str,
        grace: float,
        drains: Callable[[float], list[Awaitable[int]]],
        serving: asyncio.Future[Any],
        on_first: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.grace, self.drains, self.serving = name, grace, drains, serving
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
            self.draining = asyncio.ensure_future(asyncio.gather(*self.drains(self.grace)))
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


@cli.command("workers")
def workers_cmd(
    all_: Annotated[
        bool, typer.Option("--all", help="Also workers gone without a clean exit (last day)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Live workers: host, pid, the workflows they serve, when last seen."""
    import time

    rows = _run(lambda: _with_app(lambda app: app.store.list_workers()))
    now = time.time()
    shown = [w for w in rows if all_ or w.live(now)]
    if as_json:
        _print_json(
            [
                {
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
        )
        return
    if not shown:
        typer.echo("no live workers; start one: keel worker MODULE")
        return
    from keel.console import console, workers_table

    console().print(workers_table(shown, now))


runs_cli = typer.Typer(
    help="List runs, newest first; keel runs purge deletes ended ones past a retention.",
    invoke_without_command=True,
)
cli.add_typer(runs_cli, name="runs")


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
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first (keel runs purge --help: delete old ended runs)."""
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
        app = _store_app()
        try:
            found = await app.list_runs(st, workflow, limit, since=start, until=end)
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
    from keel.store.base import ENDED, PurgeScope
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
        from keel.engine.retention import purge

        store = app.store
        if dry_run:
            done = await store.count_purge(scope, now)
        else:
            done = await purge(store, scope, now, batch=batch)
        return done, await store.reclaim_space(full=vacuum) if not dry_run else None

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


@cli.command()
def show(
    run_id: str,
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="MODULE",
            help="Module or .py path defining the run's App: its state model gives the "
            "state the run started with (otherwise inferred from the final state).",
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
) -> None:
    """Show a run and its journal as a tree (status, attempts, timings, state changes).

    `state: a, b` on a step names the state fields the workflow changed after that step,
    before its next one; --json gives each step `state_changed` and `state_after`.
    Inputs, outputs, state and errors are shown redacted unless --raw.
    """
    from keel.observe.journal_view import journal_view, starting_state

    async def go() -> Any:
        app = _store_app()
        try:
            return await app.get_run(run_id), await app.steps(run_id), app.redactor
        finally:
            await app.close()

    info, steps, redactor = _run(go)
    initial, fields = None, None
    if app_ref is not None:
        from keel.loader import find_app, load_module

        try:
            user_app = find_app(load_module(app_ref))
            registry, redactor = user_app.registry, user_app.redactor
        except KeelError as exc:
            _fail(exc.message)
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


@cli.command()
def trace(run_id: str, as_json: JsonOpt = False) -> None:
    """Show a run's trace: the span tree with durations, status, tokens and cost."""
    spans = _run(lambda: _with_app(lambda app: app.trace(run_id)))
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


@cli.command()
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
    rows = _run(
        lambda: _with_app(
            lambda app: app.store.usage_report(by, workflow=workflow, tenant=tenant, since=start)
        )
    )
    if as_json:
        _print_json(rows)
        return
    from keel.console import console, costs_table

    console().print(costs_table(rows, by))


@cli.command("signal")
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
) -> None:
    """Send a signal to a run waiting for it (the run resumes).

    A run not waiting for NAME refuses it and says what it waits for; --queue keeps it
    for a later wait instead. An ended run refuses every signal.
    """
    data = _json_arg(payload, "--payload")

    async def go() -> Any:
        app = _store_app()
        try:
            resumes = await app.signal(run_id, name, data, queue=queue)
            if resumes:
                return True, await _resume_notice(app, run_id)
            return False, await app.get_run(run_id)
        finally:
            await app.close()

    resumes, then = _run(go)
    if resumes:  # then: whether a live worker takes the run on
        typer.echo(f"signal {name!r} delivered to {run_id}; {then.message}")
    else:  # then: the run, not waiting for it yet
        typer.echo(
            f"signal {name!r} queued for {run_id} ({then.status.value}): its next"
            f" ctx.wait_for({name!r}) takes it"
        )


@cli.command()
def cancel(run_id: str) -> None:
    """Cancel a run that has not finished."""

    async def go() -> Any:
        app = _store_app()
        try:
            before = await app.get_run(run_id)
            if before.status.terminal:
                return before, False
            return await app.cancel(run_id), True
        finally:
            await app.close()

    info, cancelled = _run(go)
    if not cancelled or info.status.value != "CANCELLED":
        _fail(
            f"run {run_id} had already ended {info.status.value}; nothing to cancel",
            EXIT_FAILED,
        )
    typer.echo(f"run {run_id} cancelled")


escalations_cli = typer.Typer(
    help="Failures routed to a person: list, show, resolve, reject.",
    invoke_without_command=True,
    no_args_is_help=False,
)
cli.add_typer(escalations_cli, name="escalations")


async def _with_app(fn: Callable[[Any], Awaitable[T]]) -> T:
    app = _store_app()
    try:
        return await fn(app)
    finally:
        await app.close()


async def _shown(app: Any, found: Awaitable[Any]) -> Any:
    """Escalations, requests or eval cases as the App's redactor shows them."""
    from keel.types import Escalation

    def one(x: Any) -> Any:
        if isinstance(x, Escalation):
            return app.redactor.escalation(x)
        if hasattr(x, "request") and hasattr(x, "decision"):  # a hitl ReviewRequest
            return app.redactor.review(x)
        return app.redactor.value(x)

    value = await found
    return [one(x) for x in value] if isinstance(value, list) else one(value)


async def _resume_notice(app: Any, run_id: str, then: str = "resumes") -> Any:
    from keel.presence import resume_notice

    return await resume_notice(app, run_id, then)


async def _noticed(app: Any, decided: Awaitable[T], then: str = "resumes") -> tuple[T, Any]:
    """A decision, and whether a live worker will take its run on (`keel.presence`)."""
    done = await decided
    return done, await _resume_notice(app, done.run_id, then)  # type: ignore[attr-defined]


@escalations_cli.callback()
def escalations_default(ctx: typer.Context) -> None:
    """Without a subcommand: the open escalations."""
    if ctx.invoked_subcommand is None:
        escalations_list(status="open", queue=None, as_json=False)


@escalations_cli.command("list")
def escalations_list(
    status: Annotated[
        str, typer.Option("--status", "-s", help="open, resolved, rejected or all")
    ] = "open",
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List escalations, newest first."""
    found = _run(lambda: _with_app(lambda app: _shown(app, app.escalations.list(status, queue))))
    if as_json:
        _print_json(
            [
                e.model_dump(mode="json", exclude={"packet"}) | {"reason": e.packet.reason}
                for e in found
            ]
        )
        return
    from keel.console import console, escalations_table

    console().print(escalations_table(found))


@escalations_cli.command("show")
def escalations_show(escalation_id: str, as_json: JsonOpt = False) -> None:
    """Show an escalation packet: what was tried, what happened, why it needs a person."""
    esc = _run(lambda: _with_app(lambda app: _shown(app, app.escalations.get(escalation_id))))
    if as_json:
        _print_json(esc.model_dump(mode="json"))
        return
    from keel.console import console, escalation_detail

    console().print(escalation_detail(esc))


@escalations_cli.command("resolve")
def escalations_resolve(
    escalation_id: str,
    result: Annotated[
        str | None,
        typer.Option(
            "--result",
            "-r",
            help=f"JSON: the tool's result, or state fields for a phase: {_JSON_HELP}",
        ),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who decided")] = "",
    note: Annotated[str | None, typer.Option("--note")] = None,
) -> None:
    """Resolve an escalation with a result; the waiting run resumes."""
    data = _json_arg(result, "--result")
    esc, notice = _run(
        lambda: _with_app(
            lambda app: _noticed(
                app,
                app.escalations.resolve(escalation_id, data, by=by or _whoami(), note=note),
            )
        )
    )
    typer.echo(f"escalation {esc.id} resolved; {notice.message}")


@escalations_cli.command("reject")
def escalations_reject(
    escalation_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required)")] = None,
    by: Annotated[str, typer.Option("--by", help="Who decided")] = "",
) -> None:
    """Reject an escalation; the step or phase fails with EscalationRejected."""
    if reason is None:  # checked here, not by Typer, so the error is one line
        _fail("a rejection needs --reason TEXT, so the run's record says why")
        return
    esc, notice = _run(
        lambda: _with_app(
            lambda app: _noticed(
                app,
                app.escalations.reject(escalation_id, reason, by=by or _whoami()),
                "continues with the failure",
            )
        )
    )
    typer.echo(f"escalation {esc.id} rejected; {notice.message}")


approvals_cli = typer.Typer(
    help="Decisions that gate runs: approvals, low-confidence and novelty reviews.",
    invoke_without_command=True,
)
cli.add_typer(approvals_cli, name="approvals")
review_cli = typer.Typer(help="Sampled review of completed runs.", invoke_without_command=True)
cli.add_typer(review_cli, name="review")


def _print_request(req: Any, audit: list[dict[str, Any]] | None = None) -> None:
    from keel.console import console, review_detail

    console().print(review_detail(req, audit))


@approvals_cli.callback()
def approvals_default(ctx: typer.Context) -> None:
    """Without a subcommand: the pending requests."""
    if ctx.invoked_subcommand is None:
        approvals_list(queue=None, status="pending", kind=None, as_json=False)


@approvals_cli.command("list")
def approvals_list(
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    status: Annotated[
        str,
        typer.Option("--status", "-s", help="pending, approved, rejected, edited, expired or all"),
    ] = "pending",
    kind: Annotated[
        str | None, typer.Option("--kind", help="approval, low_confidence or novelty")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List requests, oldest first."""
    found = _run(
        lambda: _with_app(lambda app: _shown(app, app.approvals.list(queue, status, kind)))
    )
    if as_json:
        _print_json([r.summary() for r in found])
        return
    from keel.console import console, reviews_table

    console().print(reviews_table(found))


@approvals_cli.command("show")
def approvals_show(request_id: str, as_json: JsonOpt = False) -> None:
    """Show a request: why it is here, the proposed action, the context, the audit log."""
    req, log_ = _run(lambda: _with_app(lambda app: _get_with_audit(app, request_id)))
    if as_json:
        _print_json({**req.summary(), "request": req.request, "audit": log_})
        return
    _print_request(req, log_)


async def _get_with_audit(app: Any, request_id: str) -> Any:
    req = await _shown(app, app.approvals.get(request_id))
    return req, app.redactor.value(await app.approvals.audit(request_id))


@approvals_cli.command("approve")
def approvals_approve(
    request_id: str,
    note: Annotated[str | None, typer.Option("--note")] = None,
    by: Annotated[str, typer.Option("--by")] = "",
) -> None:
    """Approve (or, for a low-confidence output, confirm) a request."""
    req, notice = _run(
        lambda: _with_app(
            lambda app: _noticed(
                app, app.approvals.approve(request_id, by=by or _whoami(), note=note)
            )
        )
    )
    typer.echo(f"{req.kind} {req.id} {req.status}; {notice.message}")


@approvals_cli.command("reject")
def approvals_reject(
    request_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required)")] = None,
    by: Annotated[str, typer.Option("--by")] = "",
) -> None:
    """Reject a request; the waiting step raises ApprovalRejected (or ReviewRejected)."""
    if reason is None:
        _fail("a rejection needs --reason TEXT, so the run's record says why")
        return
    req, notice = _run(
        lambda: _with_app(
            lambda app: _noticed(
                app,
                app.approvals.reject(request_id, reason, by=by or _whoami()),
                "continues with the rejection",
            )
        )
    )
    typer.echo(f"{req.kind} {req.id} rejected; {notice.message}")


@approvals_cli.command("edit")
def approvals_edit(
    request_id: str,
    args: Annotated[
        str, typer.Option("--args", help=f"JSON object of the tool's arguments: {_JSON_HELP}")
    ],
    note: Annotated[str | None, typer.Option("--note")] = None,
    by: Annotated[str, typer.Option("--by")] = "",
) -> None:
    """Edit the proposed arguments, then approve (edits are validated first)."""
    data = _json_arg(args, "--args")
    req, notice = _run(
        lambda: _with_app(
            lambda app: _noticed(
                app, app.approvals.edit(request_id, data, by=by or _whoami(), note=note)
            )
        )
    )
    typer.echo(f"approval {req.id} approved with edited arguments; {notice.message}")


@approvals_cli.command("correct")
def approvals_correct(
    request_id: str,
    output: Annotated[
        str, typer.Option("--output", help=f"JSON: the right output: {_JSON_HELP}")
    ],
    by: Annotated[str, typer.Option("--by")] = "",
) -> None:
    """For a low-confidence output: supply the right one; it becomes the step's result."""
    data = _json_arg(output, "--output")
    req, notice = _run(
        lambda: _with_app(
            lambda app: _noticed(app, app.approvals.correct(request_id, data, by=by or _whoami()))
        )
    )
    typer.echo(f"{req.id} corrected; {notice.message}")


@review_cli.callback()
def review_default(ctx: typer.Context) -> None:
    """Without a subcommand: the samples waiting for a verdict."""
    if ctx.invoked_subcommand is None:
        review_list(status="pending", workflow=None, as_json=False)


@review_cli.command("list")
def review_list(
    status: Annotated[
        str, typer.Option("--status", "-s", help="pending, correct, incorrect or all")
    ] = "pending",
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List sampled runs."""
    found = _run(lambda: _with_app(lambda app: _shown(app, app.reviews.list(status, workflow))))
    if as_json:
        _print_json(
            [
                {**r.summary(), "input": r.request.get("input"), "result": r.request.get("result")}
                for r in found
            ]
        )
        return
    from keel.console import console, reviews_table

    console().print(reviews_table(found))


@review_cli.command("show")
def review_show(review_id: str, as_json: JsonOpt = False) -> None:
    """Show a sampled run's input and result."""
    req = _run(lambda: _with_app(lambda app: _shown(app, app.reviews.get(review_id))))
    if as_json:
        _print_json({**req.summary(), "request": req.request})
        return
    _print_request(req)


@review_cli.command("verdict")
def review_verdict(
    review_id: str,
    correct: Annotated[bool | None, typer.Option("--correct/--incorrect")] = None,
    label: Annotated[
        str | None, typer.Option("--label", help=f"JSON: the right output: {_JSON_HELP}")
    ] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    by: Annotated[str, typer.Option("--by")] = "",
) -> None:
    """Mark a sampled run correct or incorrect (with the right output if you have it)."""
    if correct is None:
        _fail("say --correct or --incorrect")
        return
    data = _json_arg(label, "--label")
    req = _run(
        lambda: _with_app(
            lambda app: app.reviews.verdict(
                review_id, correct, by=by or _whoami(), label=data, note=note
            )
        )
    )
    typer.echo(f"{req.id}: {req.status}")


@review_cli.command("export")
def review_export(workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None) -> None:
    """Reviewed samples as eval cases, one JSON object per line."""
    cases = _run(lambda: _with_app(lambda app: _shown(app, app.reviews.export(workflow))))
    for case in cases:
        typer.echo(json.dumps(case, default=str))


users_cli = typer.Typer(help="Review-console users and their API tokens.", no_args_is_help=True)
cli.add_typer(users_cli, name="users")


@users_cli.command("add")
def users_add(
    name: str,
    role: Annotated[str, typer.Option("--role", "-r", help="viewer, reviewer or admin")],
    groups: Annotated[
        str | None,
        typer.Option("--groups", "-g", help="Queues they may decide, comma-separated (*: all)"),
    ] = None,
) -> None:
    """Create a user and print their API token (shown once; only its hash is stored)."""
    from keel.server.auth import add_user

    queues = [g.strip() for g in (groups or "").split(",") if g.strip()]
    by = f"cli:{_whoami()}"
    token = _run(lambda: _with_app(lambda app: add_user(app.store, name, role, queues, by=by)))
    typer.echo(f"created {role} {name!r}; API token (shown once, store it now):", err=True)
    typer.echo(token)


@users_cli.command("remove")
def users_remove(name: str) -> None:
    """Delete a user: their API token and console sessions stop working at once."""
    from keel.server.auth import remove_user

    by = f"cli:{_whoami()}"
    _run(lambda: _with_app(lambda app: remove_user(app.store, name, by=by)))
    typer.echo(f"removed {name!r}; their token and sessions no longer work")


@users_cli.command("rotate")
def users_rotate(name: str) -> None:
    """Give a user a new API token and print it (shown once); the old one stops working."""
    from keel.server.auth import rotate_token

    by = f"cli:{_whoami()}"
    token = _run(lambda: _with_app(lambda app: rotate_token(app.store, name, by=by)))
    typer.echo(
        f"new API token for {name!r} (shown once, store it now; the old token and their"
        " sessions no longer work):",
        err=True,
    )
    typer.echo(token)


@users_cli.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """Console users: name, role, groups (never tokens)."""
    rows = _run(lambda: _with_app(lambda app: app.store.list_users()))
    shown = [{"name": r["name"], "role": r["role"], "groups": r["groups"]} for r in rows]
    if as_json:
        _print_json(shown)
        return
    for r in shown:
        typer.echo(f"{r['name']}\t{r['role']}\t{','.join(r['groups']) or '-'}")


store_cli = typer.Typer(
    help="The store itself: encryption keys of stored payloads.", no_args_is_help=True
)
cli.add_typer(store_cli, name="store")


@store_cli.command("new-key")
def store_new_key() -> None:
    """Print a new encryption key (base64 of 32 random bytes) for KEEL_ENCRYPTION_KEY."""
    from keel.codec import new_key

    typer.echo(new_key())


def _key_counts(counts: dict[str | None, int], current: str | None) -> list[dict[str, Any]]:
    rows = [
        {"key_id": kid, "current": kid is not None and kid == current, "values": n}
        for kid, n in counts.items()
    ]
    return sorted(rows, key=lambda r: (not r["current"], r["key_id"] is None, r["key_id"] or ""))


def _key_name(row: dict[str, Any]) -> str:
    return "clear" if row["key_id"] is None else row["key_id"]


@store_cli.command("keys")
def store_keys(as_json: JsonOpt = False) -> None:
    """Which keys the stored payloads are encrypted with (and how many are in clear)."""

    async def go(app: Any) -> tuple[Any, dict[str | None, int]]:
        return app.codec, await app.store.payload_keys()

    codec, counts = _run(lambda: _with_app(go))
    current = codec.key_id if codec is not None else None
    configured = list(getattr(codec, "key_ids", [current] if current else []))
    rows = _key_counts(counts, current)
    if as_json:
        _print_json({"current": current, "configured": configured, "stored": rows})
        return
    if codec is None:
        typer.echo(
            "no encryption key configured (KEEL_ENCRYPTION_KEY): payloads are stored in clear"
        )
    else:
        typer.echo(f"current key {current}; configured: {', '.join(configured)}")
    for r in rows:
        mark = " (current)" if r["current"] else ""
        if r["key_id"] is not None and r["key_id"] not in configured:
            mark = " (NOT configured: these values cannot be read)"
        typer.echo(f"  {_key_name(r)}{mark}\t{r['values']}")


@store_cli.command("rekey")
def store_rekey(
    batch: Annotated[int, typer.Option(help="Rows per transaction.", min=1)] = 500,
    vacuum: Annotated[
        bool,
        typer.Option(
            help="Then rewrite the file, so no old value survives in free pages"
            " (blocks writers while it runs)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt every stored payload with the current key (the first of
    KEEL_ENCRYPTION_KEY): values under older keys and values stored in clear.

    Safe while workers run; stopped midway, it just runs again. Afterwards the keys
    listed as no longer holding values can be removed from KEEL_ENCRYPTION_KEY.
    """

    async def go(app: Any) -> tuple[dict[str, Any], dict[str | None, int]]:
        done = await app.store.rekey(batch=batch, vacuum=vacuum)
        return done, await app.store.payload_keys()

    done, counts = _run(lambda: _with_app(go))
    current = done["key_id"]
    left = {k: n for k, n in counts.items() if k != current}
    if as_json:
        _print_json({**done, "left": _key_counts(left, current)})
    else:
        typer.echo(
            f"rekeyed to key {current}: {done['sealed']} sealed (were in clear),"
            f" {done['rekeyed']} re-encrypted from older keys, {done['current']} already current"
        )
        if not done["wal_truncated"]:
            typer.echo("note: the WAL could not be truncated now (readers were active)", err=True)
    if left:
        where = ", ".join(f"{n} under {'clear' if k is None else k}" for k, n in left.items())
        _fail(
            f"payloads written meanwhile are not under key {current}: {where}. A process"
            " with older keys is still writing: give every worker the new key list,"
            " then run keel store rekey again",
            EXIT_FAILED,
        )
    if not as_json:
        typer.echo(f"every stored payload is under key {current}; older keys can be removed")


@cli.command()
def serve(
    module: Annotated[
        str | None,
        typer.Argument(help="Module or .py path defining keel.App (validates edits by tool)"),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    worker_refs: Annotated[
        list[str] | None,
        typer.Option(
            "--worker",
            metavar="MODULE",
            help="Also execute runs of this module's workflows here, so decided runs resume"
            " (repeatable)",
        ),
    ] = None,
    grace: GraceOpt = 30.0,
    max_body: Annotated[
        str | None,
        typer.Option(
            "--max-body",
            metavar="SIZE",
            help="Largest request body read (e.g. 1MiB, the default; 4MiB; 65536); more gets"
            " 413. Also KEEL_MAX_BODY / [keel.serve] max_body",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            metavar="IPS",
            help="Proxies (comma-separated IPs or networks) whose X-Forwarded-For/-Proto are"
            " believed; none by default. Also KEEL_FORWARDED_ALLOW_IPS",
        ),
    ] = None,
) -> None:
    """Serve the review console at http://HOST:PORT/ and the JSON API at /api/v1."""
    try:
        import uvicorn
    except ImportError:
        _fail("keel serve needs FastAPI and Uvicorn: pip install fastapi uvicorn")
    from keel.app import App
    from keel.loader import find_app, load_module
    from keel.server.app import create_app
    from keel.server.settings import ServeSettings

    # Read first: a bad size or address fails here, in one line, before anything starts.
    settings = ServeSettings.load(max_body=max_body, forwarded_allow_ips=forwarded_allow_ips)

    worker_apps: list[App] = []
    for ref in worker_refs or []:
        found = find_app(load_module(ref), ref)
        if found not in worker_apps:
            worker_apps.append(found)
    # The console validates edits with a module's tools: the first worker module will do.
    app = find_app(load_module(module), module) if module else (worker_apps or [App()])[0]
    names = sorted({n for a in worker_apps for n in a.registry.workflows})
    resume = (
        f"decided runs of [{', '.join(names)}] resume in this process (SIGTERM/Ctrl+C drain"
        f" it: {grace:g}s grace)"
        if worker_apps
        else "decided runs resume in a worker: keel worker MODULE, or keel serve --worker MODULE"
    )
    typer.echo(
        f"keel serve: the review console at http://{host}:{port}/ and the JSON API at"
        f" /api/v1, over {app.store_url}; {resume}",
        err=True,
    )
    if not _loopback(host):
        # Session cookies are Secure: browsers send them back only over HTTPS (or localhost).
        typer.echo("keel serve: reviewers on other machines need HTTPS in front of this "
                   "(a TLS-terminating proxy); the session cookie is Secure", err=True)
    console = create_app(
        app,
        max_body=settings.max_body,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    # Proxy headers are the console's own business (create_app, from --forwarded-allow-ips):
    # Uvicorn's default would believe X-Forwarded-For from any local process.
    http: dict[str, Any] = {
        "host": host, "port": port, "log_level": "info", "proxy_headers": False
    }
    if not worker_apps:
        uvicorn.run(console, **http)
        return

    async def go() -> None:
        server = _uvicorn_leaving_signals(uvicorn.Config(console, **http))
        workers = [a.worker() for a in worker_apps]
        serving = asyncio.gather(server.serve(), *(w.serve() for w in workers))

        def stop_http() -> None:
            server.should_exit = True

        stop = _Shutdown(
            "keel serve", grace, lambda g: [w.drain(g) for w in workers], serving, stop_http
        )
        stop.install()
        try:
            await serving
        except asyncio.CancelledError:
            pass
        finally:
            for w in workers:  # e.g. the port was taken: runs go back to the queue
                await w.stop()
            for a in {id(a): a for a in [*worker_apps, app]}.values():
                with contextlib.suppress(StoreError):  # keep the first error, if any
                    await a.close()
        _exit_after(stop.report())

    _run(go)


def _uvicorn_leaving_signals(config: Any) -> Any:
    """A Uvicorn server that leaves SIGTERM/SIGINT to `_Shutdown`: the first drains the
    workers while the server stops, and the process exits 0 (Uvicorn's own handling
    re-raises the signal at the end, and skips app shutdown on a second Ctrl+C)."""
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return Server(config)


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it is reachable from elsewhere
        return False


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "anonymous"


def main() -> None:
    cli()  # _OneLineErrors turns usage and Keel errors into one line and an exit code


if __name__ == "__main__":
    main()
