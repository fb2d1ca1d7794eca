"""The `keel` command: run workflows, host workers, inspect and steer runs.

Every error is one line on stderr, `error: <what is wrong and what to do>`, and the
exit code says which kind (README "Exit codes"): 0 done, 1 the run failed or was
cancelled (or there was nothing to act on), 2 a usage or input error, 3 the store
cannot be opened, read or written, 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from keel.cli import (
    approvals,
    drift,
    escalations,
    evals,
    memory,
    review,
    runs,
    serve,
    store,
    users,
    worker,
)
from keel.cli._common import EXIT_INTERRUPTED, EXIT_USAGE, _exit_code
from keel.errors import KeelError


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

# Every command, in the order `keel --help` lists them; each lives in the module named
# after it (runs.py holds the commands about one run or many).
cli.command()(runs.run)
cli.command()(worker.worker)
cli.command("workers")(worker.workers_cmd)
cli.command()(runs.show)
cli.command()(runs.trace)
cli.command()(runs.costs)
cli.command("signal")(runs.signal_cmd)
cli.command()(runs.cancel)
cli.command()(serve.serve)
cli.command("eval")(evals.eval_cmd)
cli.add_typer(runs.runs_cli, name="runs")
cli.add_typer(escalations.escalations_cli, name="escalations")
cli.add_typer(approvals.approvals_cli, name="approvals")
cli.add_typer(review.review_cli, name="review")
cli.add_typer(users.users_cli, name="users")
cli.add_typer(store.store_cli, name="store")
cli.add_typer(memory.memory_cli, name="memory")
cli.add_typer(drift.drift_cli, name="drift")


def main() -> None:
    try:
        cli()  # _OneLineErrors turns usage and Keel errors into one line and an exit code
    except SystemExit as exc:
        _leave(exc)
        raise


def _leave(exc: SystemExit) -> None:
    """Exit at once, skipping interpreter finalization, once a command has used a
    Temporal client or worker: the Temporal SDK's Rust runtime can abort while the
    interpreter finalizes (exit 134 after a clean stop, tests/conftest.py), which would
    turn a command that succeeded into a crash. Everything is done and flushed here."""
    if "temporalio.bridge.temporal_sdk_bridge" not in sys.modules:
        return
    import os

    code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
