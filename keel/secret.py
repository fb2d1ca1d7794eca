"""`keel.Secret`: a credential that workflows and tools pass around by reference.

Keel stores a secret as its reference, `{"$secret": "env:STRIPE_KEY"}`: the run's
input, step inputs, digests, the journal, traces and logs hold that, never the value.
The value is read from its source when code calls `.reveal()`, so a resumed run, a
replay or a step re-run after a crash reads it again (a rotated key included).

Sources: `env:NAME` (an environment variable) and `file:PATH` (a file's text, without
its trailing newline, as Docker and Kubernetes mount secrets) are built in; an App adds
others with `app.secrets.register(scheme, resolver)`.

This module sits low (the engine's serialisation relies on it): it imports nothing of
Keel but errors.
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
from collections.abc import Callable
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import SchemaSerializer, core_schema

from keel.errors import ConfigError, SecretUnavailable

Resolver = Callable[[str], "str | None"]
"""`resolver(name) -> value`, or None when the source has no such secret."""

_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")
_KEY = "$secret"


def _bad_reference(given: Any) -> ValueError:
    shown = f"a {type(given).__name__}"
    if isinstance(given, dict):  # keys only: a value may sit in it
        shown = f"an object with keys {sorted(map(str, given))}"
    return ValueError(
        f'a keel.Secret takes a reference such as {{"{_KEY}": "env:STRIPE_KEY"}} '
        f"(scheme:name), not {shown}: Keel never stores a secret's value. Put the value "
        "in an environment variable, a file or a registered source and pass its reference."
    )


class Secret:
    """A credential passed by reference: stored, traced and shown as its reference,
    its value read from the source only by `.reveal()`.

    Example:
        @app.tool
        async def charge(api_key: keel.Secret, amount: int) -> str:
            return stripe_charge(api_key.reveal(), amount)

        @app.workflow
        async def pay(ctx: keel.Context, api_key: keel.Secret, amount: int) -> str:
            return await ctx.call(charge, api_key, amount)

        app.run(pay, {"api_key": keel.Secret.env("STRIPE_KEY"), "amount": 5})
        # or from the CLI / API: {"api_key": {"$secret": "env:STRIPE_KEY"}, "amount": 5}
    """

    __slots__ = ("_ref",)

    def __init__(self, ref: str) -> None:
        scheme, sep, name = ref.partition(":") if isinstance(ref, str) else ("", "", "")
        if not sep or not name or not _SCHEME.fullmatch(scheme):
            # The text is not echoed: a value passed by mistake must not reach a log.
            raise ConfigError(
                f"keel.Secret takes a reference 'scheme:name' with a lower-case scheme, "
                "e.g. 'env:STRIPE_KEY', 'file:/run/secrets/stripe', 'vault:payments'; "
                f"this {type(ref).__name__} is not one (its text is not shown: it may be "
                "the secret itself)"
            )
        self._ref = ref

    @classmethod
    def env(cls, name: str) -> Secret:
        """The value of environment variable `name` where the step runs."""
        return cls(f"env:{name}")

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Secret:
        """The text of the file at `path` where the step runs (trailing newline removed)."""
        return cls(f"file:{os.fspath(path)}")

    @property
    def ref(self) -> str:
        """`scheme:name`, what Keel stores."""
        return self._ref

    @property
    def scheme(self) -> str:
        return self._ref.partition(":")[0]

    @property
    def name(self) -> str:
        return self._ref.partition(":")[2]

    def reveal(self) -> str:
        """The value, read from its source now (the running App's sources inside a run;
        outside one, env and file only: use `app.secrets.resolve(secret)` there).

        Raises `keel.SecretUnavailable`, naming the reference and what to set, when the
        source has no value for it.
        """
        return (_ACTIVE.get() or _BUILT_IN).resolve(self)

    def __repr__(self) -> str:
        return f"Secret({self._ref!r})"

    __str__ = __repr__  # f"Bearer {secret}" shows the reference, never the value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._ref == self._ref

    def __hash__(self) -> int:
        return hash(("keel.Secret", self._ref))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._ref,))

    # -- Pydantic: validated from a reference, serialised as one ----------------------------

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_validate, serialization=_SERIALIZE)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "title": "Secret",
            "description": "A reference to a secret: its value is never stored.",
            "type": "object",
            "properties": {_KEY: {"type": "string", "pattern": r"^[a-z][a-z0-9+.\-]*:.+$"}},
            "required": [_KEY],
            "additionalProperties": False,
        }


def _validate(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_KEY), str):
        try:
            return Secret(value[_KEY])
        except ConfigError as exc:
            raise ValueError(exc.message) from None
    raise _bad_reference(value)


def _dump(secret: Secret) -> dict[str, str]:
    return {_KEY: secret.ref}


_SERIALIZE = core_schema.plain_serializer_function_ser_schema(_dump)
# pydantic_core.to_json (Keel's serde, the store, digests) serialises any object that has
# a `__pydantic_serializer__`: a Secret anywhere in a payload is written as its reference.
Secret.__pydantic_serializer__ = SchemaSerializer(  # type: ignore[attr-defined]
    core_schema.any_schema(serialization=_SERIALIZE)
)


def references(value: Any) -> set[str]:
    """The secret references (`scheme:name`) in a JSON-like value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Secret):
            found.add(v.ref)
        elif isinstance(v, dict):
            if len(v) == 1 and isinstance(v.get(_KEY), str):
                found.add(v[_KEY])
            else:
                stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return found


# -- sources --------------------------------------------------------------------------------


def _env(name: str) -> str | None:
    return os.environ.get(name)


def _file(path: str) -> str | None:
    try:
        return Path(path).read_text().rstrip("\r\n")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretUnavailable(
            f"secret file:{path} cannot be read on {socket.gethostname()}: {exc.strerror}; "
            "make the file readable by the worker's user",
            ref=f"file:{path}",
        ) from None


_HINTS = {
    "env": "set environment variable {name} for every process that runs this step",
    "file": "create the file {name} (readable by the worker) on every host that runs this step",
}


class SecretSources:
    """Where an App's secrets come from: `env` and `file` built in, more registered.

    Example:
        app.secrets.register("vault", lambda name: vault_client.read(name))
        keel.Secret("vault:payments/stripe").reveal()   # inside a run of this app
    """

    def __init__(self) -> None:
        self._resolvers: dict[str, Resolver] = {"env": _env, "file": _file}
        self._allowed: tuple[str, ...] | None = None  # None: every reference

    def allow(self, *patterns: str) -> None:
        """Resolve only references matching these globs (`"env:STRIPE_*"`,
        `"vault:payments/*"`): whoever starts a run chooses its references, and without
        a list any variable or file the worker can read may be named.

        Example: `app.secrets.allow("env:STRIPE_KEY", "file:/run/secrets/*")`
        """
        for p in patterns:
            if not isinstance(p, str) or ":" not in p:
                raise ConfigError(
                    f"secret allow-list entries are 'scheme:name' globs such as 'env:STRIPE_*', "
                    f"not {p!r}"
                )
        self._allowed = (*(self._allowed or ()), *patterns)

    def register(self, scheme: str, resolver: Resolver) -> None:
        """Resolve references `scheme:name` with `resolver(name)` (None: no such secret)."""
        if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
            raise ConfigError(
                f"secret scheme {scheme!r} must be lower-case letters, digits, '+', '.' or "
                "'-', starting with a letter"
            )
        if not callable(resolver):
            raise ConfigError(f"the resolver for secret scheme {scheme!r} must be callable")
        known = self._resolvers.get(scheme)
        if known is not None and known is not resolver:
            raise ConfigError(f"secret scheme {scheme!r} already has a resolver")
        self._resolvers[scheme] = resolver

    @property
    def schemes(self) -> list[str]:
        return sorted(self._resolvers)

    def resolve(self, secret: Secret) -> str:
        """The secret's value from its source; `keel.SecretUnavailable` when there is none."""
        if self._allowed is not None and not any(
            fnmatch.fnmatchcase(secret.ref, p) for p in self._allowed
        ):
            raise SecretUnavailable(
                f"secret {secret.ref} is not allowed in this app (allowed: "
                f"{', '.join(self._allowed)}); if the workflow should read it, add it with "
                f"app.secrets.allow({secret.ref!r})",
                ref=secret.ref,
            )
        resolver = self._resolvers.get(secret.scheme)
        if resolver is None:
            raise SecretUnavailable(
                f"secret {secret.ref}: no source for scheme {secret.scheme!r} in this process "
                f"(known: {', '.join(self.schemes)}); register one with "
                f"app.secrets.register({secret.scheme!r}, resolver) in the App that runs "
                "this workflow",
                ref=secret.ref,
            )
        value = resolver(secret.name)
        if value is None:
            hint = _HINTS.get(secret.scheme, "make the source hold it").format(name=secret.name)
            raise SecretUnavailable(
                f"secret {secret.ref} is not available on {socket.gethostname()} "
                f"(pid {os.getpid()}): {hint}. Keel stores only the reference, so a "
                "resumed or replayed run reads the secret from its source again.",
                ref=secret.ref,
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"the resolver for secret scheme {secret.scheme!r} returned a "
                f"{type(value).__name__} for {secret.ref}; it must return a str or None"
            )
        return value


_BUILT_IN = SecretSources()
_ACTIVE: ContextVar[SecretSources | None] = ContextVar("keel_secret_sources", default=None)


def use_sources(sources: SecretSources) -> Token[SecretSources | None]:
    """Make `sources` what `Secret.reveal()` uses in this context (the engine sets the
    executing App's for each run)."""
    return _ACTIVE.set(sources)
