"""`keel approvals`: decisions that gate runs (approvals, low-confidence and novelty
reviews)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keel.cli._common import (
    _JSON_HELP,
    JsonOpt,
    _fail,
    _json_arg,
    _noticed,
    _print_json,
    _print_request,
    _run,
    _shown,
    _whoami,
    _with_app,
)

approvals_cli = typer.Typer(
    help="Decisions that gate runs: approvals, low-confidence and novelty reviews.",
    invoke_without_command=True,
)


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
    output: Annotated[str, typer.Option("--output", help=f"JSON: the right output: {_JSON_HELP}")],
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
