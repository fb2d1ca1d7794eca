"""`keel store`: the store itself: its schema (`migrate`), whether this host can use it
(`check`), and the encryption keys of stored payloads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli._common import EXIT_FAILED, JsonOpt, _fail, _print_json, _run, _with_app

if TYPE_CHECKING:
    from keel.store import RekeyCounts

store_cli = typer.Typer(
    help="The store itself: its schema, a health check, encryption keys of stored payloads.",
    no_args_is_help=True,
)


def _configured() -> tuple[str, Any, Any]:
    """The store URL, its connection options and the engine settings, as an App reads
    them (code > KEEL_* > keel.toml > defaults), without opening the store."""
    from keel import config

    url, settings = config.load()
    return url, config.store_options(), settings


@store_cli.command("migrate")
def store_migrate(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be done; change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or upgrade the store's schema to this Keel's version.

    Idempotent and safe from several hosts at once (one does it, the others find it
    done). Run it as the release step before starting workers of a newer Keel: on
    Postgres, workers refuse to start on an older schema (KEEL_AUTO_MIGRATE=true lets
    them upgrade it).
    """
    from keel.store.ops import migrate

    url, options, _ = _configured()
    done = _run(lambda: migrate(url, options, dry_run=dry_run))
    if as_json:
        _print_json(done.as_dict())
    else:
        typer.echo(f"store {done.where}: {done.message}")


@store_cli.command("check")
def store_check(as_json: JsonOpt = False) -> None:
    """Can this host use the store? Connects (timing a round trip), compares the schema
    version with this Keel's and this host's clock with the store's.

    Exit 0 when every check passes (warnings allowed), 3 when the store cannot be
    reached, 1 when another check fails; each failure is one `error:` line. Fit for a
    readiness probe.
    """
    from keel.cli.store_check import check

    url, options, settings = _configured()
    report = _run(lambda: check(url, options, settings.lease_seconds))
    if as_json:
        _print_json(report.as_dict())
    else:
        typer.echo(f"store    {report.backend} {report.where}")
        for c in report.checks:
            typer.echo(f"{c.name:<8} {c.status:<5} {c.detail}")
    for c in report.checks:
        if c.status == "fail":
            typer.echo(f"error: {c.name}: {c.detail}", err=True)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


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
        from keel.maintenance import Maintenance

        return app.codec, await Maintenance(app).payload_keys()

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

    async def go(app: Any) -> tuple[RekeyCounts, dict[str | None, int]]:
        from keel.maintenance import Maintenance

        upkeep = Maintenance(app)
        done = await upkeep.rekey(batch=batch, vacuum=vacuum)
        return done, await upkeep.payload_keys()

    done, counts = _run(lambda: _with_app(go))
    current = done.key_id
    left = {k: n for k, n in counts.items() if k != current}
    if as_json:
        _print_json({**done.as_dict(), "left": _key_counts(left, current)})
    else:
        typer.echo(
            f"rekeyed to key {current}: {done.sealed} sealed (were in clear),"
            f" {done.rekeyed} re-encrypted from older keys, {done.current} already current"
        )
        if not done.wal_truncated:
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
