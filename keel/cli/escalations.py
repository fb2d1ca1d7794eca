"""`keel escalations`: failures routed to a person."""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli._common import (
    _JSON_HELP,
    JsonOpt,
    _fail,
    _json_arg,
    _noticed,
    _print_json,
    _run,
    _shown,
    _whoami,
    _with_app,
)

escalations_cli = typer.Typer(
    help="Failures routed to a person: list, show, resolve, reject.",
    invoke_without_command=True,
    no_args_is_help=False,
)


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
