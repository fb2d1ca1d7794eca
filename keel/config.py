"""Configuration: code arguments win, then KEEL_* variables, then keel.toml, then defaults."""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.engine.runtime import Settings
from keel.engine.slots import check_limit
from keel.errors import ConfigError
from keel.store import DEFAULT_URL, StoreOptions

if TYPE_CHECKING:
    from keel.codec import PayloadCodec


# Settings that are counts of slots: whole numbers >= 1, nothing else.
_LIMITS = frozenset({"max_runs", "max_steps"})


def _toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    section = data.get("keel", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [keel] must be a table")
    return section


def load(store: str | None = None, config_file: str | Path = "keel.toml") -> tuple[str, Settings]:
    """The store URL and engine settings for an App."""
    file_cfg = _toml(Path(config_file))
    url = store or os.environ.get("KEEL_STORE") or file_cfg.get("store") or DEFAULT_URL
    settings = Settings()
    for f in fields(Settings):
        raw = os.environ.get(f"KEEL_{f.name.upper()}", file_cfg.get(f.name))
        if raw is None and f.name == "max_runs":  # its name before --max-runs existed
            raw = os.environ.get("KEEL_CONCURRENCY", file_cfg.get("concurrency"))
        if raw is None:
            continue
        if f.name in _LIMITS:  # 2.5 or true would pass int(): refuse, naming the option
            setattr(settings, f.name, check_limit(f"setting {f.name} (KEEL_{f.name.upper()})", raw))
            continue
        setattr(settings, f.name, _typed(f.name, raw, type(getattr(settings, f.name))))
    return str(url), settings


def _typed(name: str, raw: Any, kind: type) -> Any:
    """`raw` (a KEEL_* string or a keel.toml value) as a `kind`, or a ConfigError naming
    the setting."""
    try:
        if kind is bool and isinstance(raw, str):
            if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            raw = raw.strip().lower() in ("1", "true", "yes", "on")
        if kind is int and isinstance(raw, float | bool):  # int(2.5) would pass: refuse
            raise ValueError(raw)
        if kind is not str and isinstance(raw, str) and not raw.strip():
            raise ValueError(raw)
        if kind is str and not isinstance(raw, str):
            raise TypeError(raw)
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {name} (KEEL_{name.upper()}) must be {_KINDS[kind]}, got {raw!r}"
        ) from None


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


# keel.toml key (KEEL_ + its upper case is the variable) -> StoreOptions field, and type.
_STORE_OPTIONS: dict[str, tuple[str, type]] = {
    "pg_pool": ("pool_size", int),
    "pg_connect_timeout": ("connect_timeout", int),
    "pg_password_file": ("password_file", str),
    "pg_statement_timeout": ("statement_timeout", float),
    "pg_application_name": ("application_name", str),
    "auto_migrate": ("auto_migrate", bool),
}


def store_options(config_file: str | Path = "keel.toml") -> StoreOptions:
    """The store's connection settings: KEEL_PG_POOL, KEEL_PG_CONNECT_TIMEOUT,
    KEEL_PG_PASSWORD_FILE, KEEL_PG_STATEMENT_TIMEOUT, KEEL_PG_APPLICATION_NAME and
    KEEL_AUTO_MIGRATE, else keel.toml's `pg_pool`, ... `auto_migrate`, else defaults.

    Example:
        >>> store_options("no-such.toml").pool_size  # doctest: +SKIP
        8
    """
    file_cfg = _toml(Path(config_file))
    given: dict[str, Any] = {}
    for key, (field, kind) in _STORE_OPTIONS.items():
        raw = os.environ.get(f"KEEL_{key.upper()}", file_cfg.get(key))
        if raw is not None:
            given[field] = _typed(key, raw, kind)
    try:
        return StoreOptions(**given)
    except ConfigError as exc:
        # StoreOptions names its field; say which setting that is.
        field, rest = exc.message.split(" ", 1)
        key = next(k for k, (f, _) in _STORE_OPTIONS.items() if f == field)
        raise ConfigError(f"setting {key} (KEEL_{key.upper()}) {rest}") from None


def section(name: str, config_file: str | Path = "keel.toml") -> dict[str, Any] | None:
    """A sub-table of `[keel]` in keel.toml (e.g. `llm`), or None."""
    value = _toml(Path(config_file)).get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{config_file}: [keel.{name}] must be a table")
    return value


def codec(config_file: str | Path = "keel.toml") -> PayloadCodec | None:
    """The codec the environment asks for: `KEEL_ENCRYPTION_KEY` (base64 keys, comma-
    separated, the first current), else `KEEL_ENCRYPTION_KEY_FILE`, else keel.toml's
    `encryption_key_file`; None (payloads stored in clear) when none is set. Keys are
    never read from the store, nor written in keel.toml itself."""
    import keel.codec as _codec

    if _codec.ENV_KEY in os.environ or _codec.ENV_KEY_FILE in os.environ:
        return _codec.AESGCMCodec.from_env()
    path = _toml(Path(config_file)).get("encryption_key_file")
    if path is None:
        return None
    if not isinstance(path, str):
        raise ConfigError(f"{config_file}: encryption_key_file must be a path (a string)")
    return _codec.AESGCMCodec.from_file(path, f"{config_file} encryption_key_file")
