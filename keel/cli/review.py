"""`keel review`: sampled review of completed runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from keel.cli._common import (
    _JSON_HELP,
    JsonOpt,
    _fail,
    _json_arg,
    _print_json,
    _print_request,
    _run,
    _shown,
    _whoami,
    _with_app,
)

review_cli = typer.Typer(help="Sampled review of completed runs.", invoke_without_command=True)


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
