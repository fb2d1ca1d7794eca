"""`python -m keel.backends.temporal MODULE --backend temporal://host:7233/ns?task_queue=q`

Hosts the workflows and tools of MODULE's `keel.App` in a Temporal worker until SIGTERM
or Ctrl+C (`KEEL_BACKEND` when `--backend` is not given); `keel worker MODULE
--backend URL` does the same (both run `keel.backends.temporal.hosting.host`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from keel.backends.temporal.config import Backend, from_env
from keel.errors import ConfigError


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.backends.temporal", description=__doc__)
    parser.add_argument("module", help="a dotted module name or a path to a .py file")
    parser.add_argument("--backend", help="temporal://host:7233/namespace?task_queue=queue")
    parser.add_argument(
        "--max-cached-workflows", type=int, default=1000, help="0: replay every workflow task"
    )
    args = parser.parse_args(argv)
    try:
        backend = Backend.from_url(args.backend) if args.backend else from_env()
        if backend is None:
            raise ConfigError(
                "no Temporal backend: pass --backend temporal://host:7233/namespace?"
                "task_queue=queue or set KEEL_BACKEND"
            )
        from keel.loader import load_app

        app = load_app(args.module)
        from keel.backends.temporal.hosting import host

        asyncio.run(host(app, backend, cached=args.max_cached_workflows, say=_say))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK can abort while the interpreter finalizes (exit 134 after a clean
    # stop; tests/conftest.py): the worker has stopped, so skip finalization.
    os._exit(status)
