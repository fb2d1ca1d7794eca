"""`keel users`: review-console users and their API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli._common import JsonOpt, _print_json, _run, _whoami, _with_app

users_cli = typer.Typer(help="Review-console users and their API tokens.", no_args_is_help=True)


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
    from keel.server.identity import Identity

    queues = [g.strip() for g in (groups or "").split(",") if g.strip()]
    by = f"cli:{_whoami()}"
    token = _run(lambda: _with_app(lambda app: Identity(app).add(name, role, queues, by=by)))
    typer.echo(f"created {role} {name!r}; API token (shown once, store it now):", err=True)
    typer.echo(token)


@users_cli.command("remove")
def users_remove(name: str) -> None:
    """Delete a user: their API token and console sessions stop working at once."""
    from keel.server.identity import Identity

    by = f"cli:{_whoami()}"
    _run(lambda: _with_app(lambda app: Identity(app).remove(name, by=by)))
    typer.echo(f"removed {name!r}; their token and sessions no longer work")


@users_cli.command("rotate")
def users_rotate(name: str) -> None:
    """Give a user a new API token and print it (shown once); the old one stops working."""
    from keel.server.identity import Identity

    by = f"cli:{_whoami()}"
    token = _run(lambda: _with_app(lambda app: Identity(app).rotate(name, by=by)))
    typer.echo(
        f"new API token for {name!r} (shown once, store it now; the old token and their"
        " sessions no longer work):",
        err=True,
    )
    typer.echo(token)


@users_cli.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """Console users: name, role, groups (never tokens)."""
    from keel.server.identity import Identity

    rows = _run(lambda: _with_app(lambda app: Identity(app).list()))
    shown = [{"name": u.name, "role": u.role, "groups": list(u.groups)} for u in rows]
    if as_json:
        _print_json(shown)
        return
    for r in shown:
        typer.echo(f"{r['name']}\t{r['role']}\t{','.join(r['groups']) or '-'}")
