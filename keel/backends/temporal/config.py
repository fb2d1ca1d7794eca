"""Where a Temporal cluster is: `Backend(...)` and the `temporal://` URL that names one.

No temporalio import here: parsing a URL or reading `KEEL_BACKEND` must stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from keel.errors import ConfigError

DEFAULT_PORT = 7233
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "keel"
_URL_HELP = "write it as temporal://host:7233/namespace?task_queue=queue[&sandbox=off]"
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


@dataclass(frozen=True)
class Backend:
    """A Temporal cluster to run an App's workflows on.

    Example:
        backend = Backend(address="localhost:7233", namespace="default", task_queue="keel")
        backend = Backend.from_url("temporal://localhost:7233/default?task_queue=keel")

    `sandbox=False` (`?sandbox=off`) runs a worker's workflows outside Temporal's
    sandbox, which otherwise refuses a workflow's direct reads of the clock, random,
    files or the network at its first run (docs/temporal.md, "The sandbox").
    """

    address: str = f"localhost:{DEFAULT_PORT}"
    namespace: str = DEFAULT_NAMESPACE
    task_queue: str = DEFAULT_TASK_QUEUE
    sandbox: bool = True

    def __post_init__(self) -> None:
        for field, value in (
            ("address", self.address),
            ("namespace", self.namespace),
            ("task_queue", self.task_queue),
        ):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"Backend({field}=...) must be a non-empty string, got {value!r}; {_URL_HELP}"
                )
        if not isinstance(self.sandbox, bool):
            raise ConfigError(f"Backend(sandbox=...) takes True or False, got {self.sandbox!r}")

    async def deliver_decision(
        self, host: Any, run_id: str, target: str, decision: dict[str, Any]
    ) -> bool:
        """A person's decision on request `target` to run `run_id` on this cluster (the
        update `keel.decide`); False when Keel's engine runs it (keel.hitl.delivery)."""
        from keel.backends.temporal.decisions import deliver

        return await deliver(host, run_id, target, decision)

    @property
    def url(self) -> str:
        """This backend as a `temporal://` URL (what `KEEL_BACKEND` takes)."""
        off = "" if self.sandbox else "&sandbox=off"
        return f"temporal://{self.address}/{self.namespace}?task_queue={self.task_queue}{off}"

    @classmethod
    def from_url(cls, url: str) -> Backend:
        """Parse `temporal://host[:port][/namespace][?task_queue=q][&sandbox=off]`; a
        clear error if bad."""
        parts = urlsplit(url.strip())
        if parts.scheme != "temporal":
            raise ConfigError(
                f"backend URL {url!r} is not a Temporal URL (scheme {parts.scheme!r}); " + _URL_HELP
            )
        if not parts.hostname:
            raise ConfigError(f"backend URL {url!r} names no host; {_URL_HELP}")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"backend URL {url!r} has a bad port; {_URL_HELP}") from None
        path = parts.path.strip("/")
        if "/" in path:
            raise ConfigError(
                f"backend URL {url!r}: the path is the namespace, one segment, got {path!r}; "
                + _URL_HELP
            )
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"task_queue", "sandbox"})
        if unknown:
            raise ConfigError(
                f"backend URL {url!r}: unknown option(s) {', '.join(unknown)}; the "
                f"options are task_queue and sandbox ({_URL_HELP})"
            )
        queues = query.get("task_queue", [DEFAULT_TASK_QUEUE])
        if len(queues) != 1 or not queues[0]:
            raise ConfigError(f"backend URL {url!r}: give task_queue once, non-empty; {_URL_HELP}")
        switch = query.get("sandbox", ["on"])
        if len(switch) != 1 or switch[0].lower() not in _SWITCH:
            raise ConfigError(
                f"backend URL {url!r}: sandbox takes on or off, once, got {switch}; {_URL_HELP}"
            )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        sandbox = _SWITCH[switch[0].lower()]
        return cls(f"{host}:{port}", path or DEFAULT_NAMESPACE, queues[0], sandbox)


def from_env() -> Backend | None:
    """The backend `KEEL_BACKEND` names (a `temporal://` URL), or None when unset."""
    url = os.environ.get("KEEL_BACKEND", "").strip()
    return Backend.from_url(url) if url else None


def resolve(given: Backend | str | None) -> Backend | None:
    """`App(backend=...)`: a Backend, its `temporal://` URL, or None for `KEEL_BACKEND`."""
    if given is None:
        return from_env()
    if isinstance(given, Backend):
        return given
    if isinstance(given, str):
        return Backend.from_url(given)
    raise ConfigError(
        f"App(backend=...) takes a keel.backends.temporal.Backend or a temporal:// URL, "
        f"not {type(given).__name__}"
    )


__all__ = ["Backend", "from_env", "resolve"]
