"""What every command shares: exit codes, the one-line `error:` exit, JSON options,
running a coroutine against the configured store, and who is deciding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from keel.errors import KeelError, StoreError

T = TypeVar("T")

EXIT_FAILED = 1  # the run FAILED or was CANCELLED, or there was nothing to act on
EXIT_USAGE = 2  # bad arguments, input, configuration, or a request the run refuses
EXIT_STORE = 3  # the store cannot be opened, read or written (corrupt, read-only, full)
EXIT_INTERRUPTED = 130  # Ctrl+C (Typer/Click already exit 130 on KeyboardInterrupt)


def _exit_code(exc: KeelError) -> int:
    return EXIT_STORE if isinstance(exc, StoreError) else EXIT_USAGE


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


BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="URL",
        help="Runs on Temporal: temporal://host:7233/namespace?task_queue=q"
        " [default: KEEL_BACKEND]",
    ),
]


def _store_app(backend: str | None = None) -> Any:
    """The App the commands read and steer runs through (`backend`: its temporal://
    URL, else KEEL_BACKEND; a bad URL is a one-line usage error)."""
    from keel.app import App

    return App(backend=backend)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


async def _with_app(fn: Callable[[Any], Awaitable[T]], backend: str | None = None) -> T:
    app = _store_app(backend)
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
    """Whether a live worker takes on a run that was waiting on what was just decided."""
    from keel.presence import resume_notice

    return await resume_notice(app, run_id, then, decided=True)


async def _noticed(app: Any, decided: Awaitable[T], then: str = "resumes") -> tuple[T, Any]:
    """A decision, and whether a live worker will take its run on (`keel.presence`)."""
    done = await decided
    return done, await _resume_notice(app, done.run_id, then)  # type: ignore[attr-defined]


def _print_request(req: Any, audit: list[dict[str, Any]] | None = None) -> None:
    from keel.console import console, review_detail

    console().print(review_detail(req, audit))


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "anonymous"
