"""`keel memory`: long-term memory from the shell (add, search, list, namespaces, forget,
supersede, and what an extraction run made of what it found)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from keel.cli._common import EXIT_FAILED, JsonOpt, _fail, _json_arg, _print_json, _run, _with_app

memory_cli = typer.Typer(
    help="Long-term memory: add, search, list, forget (docs/memory.md).", no_args_is_help=True
)
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Whose memories, e.g. user:ada")]


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@memory_cli.command("add")
def memory_add(
    text: str,
    namespace: Namespace = "default",
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", "-m", help='JSON object, e.g. \'{"topic": "billing"}\''),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remember TEXT in a namespace; prints the new memory's id."""
    meta = _json_arg(metadata, "--metadata")
    mid = _run(
        lambda: _with_app(lambda app: app.memory.add(text, namespace=namespace, metadata=meta))
    )
    _print_json({"id": mid}) if as_json else typer.echo(mid)


@memory_cli.command("search")
def memory_search(
    query: str,
    namespace: Namespace = "default",
    k: Annotated[int, typer.Option("-k", help="At most this many hits")] = 5,
    min_relevance: Annotated[
        float | None,
        typer.Option("--min-relevance", help="Only hits at least this relevant (0 to 1)"),
    ] = None,
    where: Annotated[
        str | None, typer.Option("--filter", help="JSON object: metadata that must match")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="What was true then (ISO time): superseded facts too"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The memories most relevant to QUERY, with their relevance (0 to 1)."""
    flt = _json_arg(where, "--filter")
    when: Any = None
    if as_of is not None:
        try:
            when = datetime.fromisoformat(as_of)
        except ValueError:
            _fail(f"--as-of {as_of!r} is not an ISO time; use e.g. 2026-12-01T09:00:00+00:00")

    hits = _run(
        lambda: _with_app(
            lambda app: app.memory.search(
                query,
                namespace=namespace,
                k=k,
                min_relevance=min_relevance,
                filter=flt,
                as_of=when,
            )
        )
    )
    if as_json:
        _print_json([h.as_dict() for h in hits])
        return
    if not hits:
        typer.echo("no memory is relevant enough" if min_relevance else "no memories found")
        raise typer.Exit(EXIT_FAILED)
    for h in hits:
        typer.echo(f"{h.score:.2f}  {h.id}  {h.text}")


@memory_cli.command("list")
def memory_list(
    namespace: Namespace = "default",
    limit: Annotated[int, typer.Option("--limit", help="At most this many")] = 100,
    superseded: Annotated[
        bool, typer.Option("--all", help="Include superseded facts (with their validity)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """A namespace's memories in the order they were added."""
    rows = _run(
        lambda: _with_app(
            lambda app: app.memory.list(namespace=namespace, limit=limit, current=not superseded)
        )
    )
    out = [
        {
            "id": r.id,
            "text": r.text,
            "metadata": r.metadata,
            "valid_from": _when(r.valid_from),
            "valid_to": _when(r.valid_to) or None,
            "superseded_by": r.superseded_by,
            "source": r.source,
        }
        for r in rows
    ]
    if as_json:
        _print_json(out)
        return
    for r in out:
        until = (
            f"  (until {r['valid_to']}, superseded by {r['superseded_by']})"
            if r["valid_to"]
            else ""
        )
        typer.echo(f"{r['id']}  {r['valid_from']}  {r['text']}{until}")
    if not out:
        typer.echo(f"namespace {namespace!r} holds no memories")


@memory_cli.command("namespaces")
def memory_namespaces(as_json: JsonOpt = False) -> None:
    """The namespaces holding memories, with their current and superseded facts."""
    found = _run(lambda: _with_app(lambda app: app.memory.namespaces()))
    out = [
        {
            "namespace": n.namespace,
            "current": n.current,
            "superseded": n.superseded,
            "last_added": _when(n.last_added),
        }
        for n in found
    ]
    if as_json:
        _print_json(out)
        return
    for n in out:
        typer.echo(
            f"{n['namespace']}  {n['current']} current, {n['superseded']} superseded"
            f"  last added {n['last_added']}"
        )
    if not out:
        typer.echo("no memories in this store yet")


@memory_cli.command("forget")
def memory_forget(memory_id: str, as_json: JsonOpt = False) -> None:
    """Delete a memory for good (text, vector and index entry)."""
    _run(lambda: _with_app(lambda app: app.memory.forget(memory_id)))
    _print_json({"forgot": memory_id}) if as_json else typer.echo(f"forgot {memory_id}")


@memory_cli.command("supersede")
def memory_supersede(memory_id: str, text: str, as_json: JsonOpt = False) -> None:
    """Replace a fact with TEXT: the old one is kept, closed (searchable with --as-of)."""
    new = _run(lambda: _with_app(lambda app: app.memory.supersede(memory_id, text)))
    _print_json({"id": new, "supersedes": memory_id}) if as_json else typer.echo(new)


@memory_cli.command("extracts")
def memory_extracts(extraction_id: str, as_json: JsonOpt = False) -> None:
    """What an extraction run (ctx.memory.extract) found, and what became of each item."""
    items = _run(lambda: _with_app(lambda app: app.memory.extracts(extraction_id)))
    out = [
        {
            "item": i.item,
            "status": i.status,
            "text": i.text,
            "reason": i.reason,
            "memory_id": i.memory_id,
            "namespace": i.namespace,
        }
        for i in items
    ]
    if as_json:
        _print_json(out)
        return
    if not out:
        _fail(
            f"no extracted items for {extraction_id!r} (not an extraction run, or it has"
            " found nothing yet: keel show it)",
            EXIT_FAILED,
        )
    for i in out:
        why = f"  ({i['reason']})" if i["reason"] else ""
        typer.echo(f"{i['item']:>3}  {i['status']:<9}  {i['text']}{why}")
