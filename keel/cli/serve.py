"""`keel serve`: the review console and JSON API, optionally hosting workers too."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import typer

from keel.cli._common import _fail, _run
from keel.cli.worker import GraceOpt, _exit_after, _Shutdown
from keel.errors import StoreError


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
    from keel.loader import load_app
    from keel.server.app import create_app
    from keel.server.settings import ServeSettings

    # Read first: a bad size or address fails here, in one line, before anything starts.
    settings = ServeSettings.load(max_body=max_body, forwarded_allow_ips=forwarded_allow_ips)

    worker_apps: list[App] = []
    for ref in worker_refs or []:
        found = load_app(ref)
        if found not in worker_apps:
            worker_apps.append(found)
    # The console validates edits with a module's tools: the first worker module will do.
    app = load_app(module) if module else (worker_apps or [App()])[0]
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
        typer.echo(
            "keel serve: reviewers on other machines need HTTPS in front of this "
            "(a TLS-terminating proxy); the session cookie is Secure",
            err=True,
        )
    console = create_app(
        app,
        max_body=settings.max_body,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    # Proxy headers are the console's own business (create_app, from --forwarded-allow-ips):
    # Uvicorn's default would believe X-Forwarded-For from any local process.
    http: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "proxy_headers": False}
    if not worker_apps:
        uvicorn.run(console, **http)
        return

    async def go() -> None:
        server = _uvicorn_leaving_signals(uvicorn.Config(console, **http))
        workers = [a.worker() for a in worker_apps]
        serving = asyncio.gather(server.serve(), *(w.serve() for w in workers))

        def stop_http() -> None:
            server.should_exit = True

        stop = _Shutdown("keel serve", grace, workers, serving, stop_http)
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
