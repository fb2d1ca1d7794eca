"""How a store connects: what a deployment sets besides the URL (keel.toml or KEEL_*).

`keel.config.store_options()` reads them (code > KEEL_* variables > keel.toml >
defaults); `open_store(url, codec, options)` takes them. Only the Postgres backend uses
the connection settings; `auto_migrate` is Postgres's too (a SQLite file, used by one
host, always upgrades itself on open).

Example:
    >>> StoreOptions(pool_size=4, statement_timeout=30).statement_timeout
    30.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keel.errors import ConfigError

# Connections a store keeps at most (and threads running its calls): a worker's steps
# and the console's requests share them.
DEFAULT_POOL = 8
# Seconds to wait for a server that does not answer: a wrong host fails in this time
# rather than the operating system's minutes.
DEFAULT_CONNECT_TIMEOUT = 10


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Connection settings of a store (Postgres) and whether it may upgrade its schema.

    - `pool_size`: connections one process opens at most (`KEEL_PG_POOL`);
    - `connect_timeout`: whole seconds to wait for the server (`KEEL_PG_CONNECT_TIMEOUT`);
    - `password_file`: a file holding only the password, so the URL holds no secret
      (`KEEL_PG_PASSWORD_FILE`; libpq's `PGPASSWORD` and `PGPASSFILE` work as well);
    - `statement_timeout`: seconds a statement may run, 0 for no limit
      (`KEEL_PG_STATEMENT_TIMEOUT`; schema migrations are exempt);
    - `application_name`: what `pg_stat_activity` shows (default `keel worker host:pid`,
      after the `keel` command being run) (`KEEL_PG_APPLICATION_NAME`);
    - `auto_migrate`: upgrade an older Postgres schema on open instead of refusing to
      start (`KEEL_AUTO_MIGRATE`; the default is to run `keel store migrate`).

    Example:
        >>> StoreOptions(password_file="/run/secrets/pg").pool_size
        8
    """

    pool_size: int = DEFAULT_POOL
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    password_file: str | None = None
    statement_timeout: float = 0.0
    application_name: str | None = None
    auto_migrate: bool = False

    def __post_init__(self) -> None:
        # Code arguments are checked here as well as keel.toml's and KEEL_*'s.
        _whole("pool_size", self.pool_size)
        _whole("connect_timeout", self.connect_timeout)
        t = self.statement_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ConfigError(
                f"statement_timeout must be seconds >= 0 (0: no limit), got {t!r}"
            )
        object.__setattr__(self, "statement_timeout", float(t))
        if self.password_file is not None and not str(self.password_file).strip():
            raise ConfigError("password_file must be a path, got an empty string")
        name = self.application_name
        if name is not None and (not name.strip() or not name.isprintable()):
            raise ConfigError(f"application_name must be printable text, got {name!r}")


def _whole(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
