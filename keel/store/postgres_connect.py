"""How the Postgres backend reaches its server: the store URL plus `StoreOptions` as one
libpq connection string, and a direct connection made from it.

Settings the URL already has keep their place (its `connect_timeout` and
`application_name` win); the options add what a deployment sets outside it: the
password from a file (so keel.toml and the URL hold no secret), the connect timeout,
the statement timeout (appended to the URL's own `options`), and the `application_name`
that `pg_stat_activity` shows.

Example:
    >>> info = conninfo("postgresql://keel@db/keel", StoreOptions(application_name="k"))
    >>> "application_name=k" in info and "connect_timeout=10" in info
    True
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from keel.errors import ConfigError
from keel.store.options import StoreOptions

# Postgres keeps NAMEDATALEN - 1 bytes of an application name and drops the rest.
_NAME_MAX = 63


def conninfo(url: str, options: StoreOptions) -> str:
    """`url` with `options` applied, as a libpq connection string (holds the password
    when one is read from `options.password_file`: never show it)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"the store URL is not a valid Postgres URL: {_first_line(exc)}"
        ) from None
    extra: dict[str, Any] = {}
    # The URL is the more specific place: a timeout or name written in it is kept.
    if "connect_timeout" not in given:
        extra["connect_timeout"] = options.connect_timeout
    if "application_name" not in given or options.application_name is not None:
        extra["application_name"] = (options.application_name or default_name())[:_NAME_MAX]
    if options.password_file is not None:
        if given.get("password"):
            raise ConfigError(
                "the store URL holds a password and pg_password_file is set too: keep one"
                " (the file, so the URL and keel.toml hold no secret)"
            )
        extra["password"] = read_password(options.password_file)
    if options.statement_timeout:
        ms = max(1, round(options.statement_timeout * 1000))
        extra["options"] = f"{given.get('options', '')} -c statement_timeout={ms}".strip()
    return make_conninfo(url, **extra)


def connect(info: str) -> psycopg.Connection[Any]:
    """One direct connection (autocommit, `$n` placeholders), outside any pool."""
    return psycopg.connect(info, autocommit=True, cursor_factory=psycopg.RawCursor)


def read_password(path: str) -> str:
    """The password in the file at `path`: its text without the trailing newline."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Postgres password file {path!r} (pg_password_file):"
            f" {exc.strerror or exc}"
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"the Postgres password file {path!r} (pg_password_file) is empty")
    return password


def default_name() -> str:
    """`keel <command> <host>:<pid>`: `keel worker web-3:4121` for a `keel worker`, and
    `keel app ...` for a program that uses Keel itself."""
    return f"keel {_command()} {socket.gethostname()}:{os.getpid()}"


def _command() -> str:
    argv = sys.argv
    prog = Path(argv[0]) if argv and argv[0] else Path()
    is_cli = prog.name == "keel" or (prog.name == "__main__.py" and prog.parent.name == "keel")
    if is_cli and len(argv) > 1 and not argv[1].startswith("-"):
        return argv[1]
    return "app"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
