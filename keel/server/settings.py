"""The server's own settings: request body limit, trusted proxies, who sees raw payloads.

Each comes from `keel serve` options or `create_app(...)` arguments first, then a
`KEEL_*` variable, then keel.toml, then the default:

    [keel.serve]
    max_body = "1MiB"                       # KEEL_MAX_BODY; bytes, or KiB / MiB / KB / MB
    forwarded_allow_ips = ["10.0.0.5"]      # KEEL_FORWARDED_ALLOW_IPS (comma-separated)

    [keel.roles]
    raw_payloads = ["reviewer", "admin"]    # KEEL_RAW_PAYLOADS (comma-separated)
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel import config
from keel.errors import ConfigError
from keel.server.auth import ROLES

MIB = 1024 * 1024
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|kb|mb|gb)?", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kib": 1024,
    "mib": MIB,
    "gib": 1024 * MIB,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
MIN_BODY = 1024  # below this not even the sign-in form fits


@dataclass(frozen=True)
class ServeSettings:
    """What `keel serve` and `create_app` need beyond the App's own settings.

    Example:
        ServeSettings.load(max_body="4MiB", forwarded_allow_ips="10.0.0.5")
    """

    max_body: int = MIB  # bytes a request body may hold; more is refused with 413
    forwarded_allow_ips: tuple[str, ...] = ()  # proxies whose X-Forwarded-* are believed
    raw_payloads: tuple[str, ...] = ("reviewer", "admin")  # roles that see payloads raw

    @classmethod
    def load(
        cls,
        *,
        max_body: int | str | None = None,
        forwarded_allow_ips: str | Sequence[str] | None = None,
        raw_payloads: str | Sequence[str] | None = None,
        config_file: str | Path = "keel.toml",
    ) -> ServeSettings:
        serve = config.section("serve", config_file) or {}
        roles = config.section("roles", config_file) or {}
        return cls(
            max_body=parse_size(
                _pick(max_body, "KEEL_MAX_BODY", serve.get("max_body"), MIB), "max_body"
            ),
            forwarded_allow_ips=_proxies(
                _pick(
                    forwarded_allow_ips,
                    "KEEL_FORWARDED_ALLOW_IPS",
                    serve.get("forwarded_allow_ips"),
                    (),
                )
            ),
            raw_payloads=_roles(
                _pick(
                    raw_payloads, "KEEL_RAW_PAYLOADS", roles.get("raw_payloads"), cls.raw_payloads
                )
            ),
        )


def _pick(given: Any, env: str, file_value: Any, default: Any) -> Any:
    if given is not None:
        return given
    if env in os.environ:
        return os.environ[env]
    return default if file_value is None else file_value


def parse_size(value: int | str, name: str = "max_body") -> int:
    """`1048576`, `"1MiB"`, `"512 KiB"`, `"10MB"` as bytes (at least 1 KiB)."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a size such as 1MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        found = _SIZE.fullmatch(str(value).strip())
        if found is None:
            raise ConfigError(
                f"{name} {value!r} is not a size: use bytes (1048576) or a number with "
                "KiB, MiB, GiB, KB, MB or GB (1MiB)"
            )
        size = int(float(found.group(1)) * _UNITS[(found.group(2) or "b").lower()])
    if size < MIN_BODY:
        raise ConfigError(
            f"{name} {value!r} is below {MIN_BODY} bytes: the sign-in form would not fit"
        )
    return size


def _items(value: str | Sequence[str]) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(p.strip() for p in parts if p.strip())


def _proxies(value: str | Sequence[str]) -> tuple[str, ...]:
    found = _items(value)
    for entry in found:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"forwarded_allow_ips: {entry!r} is not an IP address or network (e.g. "
                "10.0.0.5, 10.0.0.0/24, or * for any)"
            ) from None
    return found


def _roles(value: str | Sequence[str]) -> tuple[str, ...]:
    found = _items(value)
    unknown = [r for r in found if r not in ROLES]
    if unknown:
        raise ConfigError(
            f"raw_payloads: unknown role {unknown[0]!r}; list some of {', '.join(ROLES)}"
        )
    return found
