"""Schema versions and the steps between them, for every backend: what `keel store
migrate` plans and reports, and the errors that send people to it.

A backend keeps its history as upgrade steps, `{version: script}`, each bringing the
schema from `version - 1` to `version` (SQLite: `keel.store._sqlite_schema.MIGRATIONS`;
Postgres: `keel.store.postgres_schema.STEPS`). A new store is made whole from
`keel.store.sql.schema.ddl` instead, and starts at the current `VERSION`.

Example:
    >>> plan(13, 15, {14: "...", 15: "..."}, "/srv/keel.db")
    (14, 15)
    >>> Migration("/srv/keel.db", 13, 15, (14, 15)).message
    'upgraded v13 → v15'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import ConfigError

MIGRATE = "keel store migrate"


@dataclass(frozen=True, slots=True)
class Migration:
    """What `keel store migrate` did (or, with `dry_run`, would do) to one store.

    `where` is where the store is (no password); `before` is 0 when there was no schema
    yet; `steps` are the versions applied in turn (empty when the store was created
    whole or was already current).

    Example:
        >>> Migration("/srv/keel.db", 0, 15).message
        'created schema v15'
    """

    where: str
    before: int
    after: int
    steps: tuple[int, ...] = ()
    dry_run: bool = False

    @property
    def action(self) -> str:
        """`created`, `upgraded` or `current`."""
        if self.before == 0:
            return "created"
        return "upgraded" if self.before != self.after else "current"

    @property
    def message(self) -> str:
        """One line for people, e.g. `upgraded v15 → v16` or `would create schema v16`."""
        if self.action == "current":
            return f"already at v{self.after}"
        if self.action == "created":
            return f"{'would create' if self.dry_run else 'created'} schema v{self.after}"
        steps = ", ".join(f"v{v}" for v in self.steps)
        if self.dry_run:
            return f"would upgrade v{self.before} → v{self.after} (steps {steps})"
        return f"upgraded v{self.before} → v{self.after}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.where,
            "action": self.action,
            "before": self.before,
            "after": self.after,
            "steps": list(self.steps),
            "dry_run": self.dry_run,
            "message": self.message,
        }


def plan(version: int, target: int, steps: Mapping[int, str], where: str) -> tuple[int, ...]:
    """The steps that bring a store at `version` (0: none yet) to `target`: empty for a
    new store (made whole) or a current one. Raises ConfigError for a newer schema, or
    one this Keel has no path from."""
    if version > target:
        raise too_new(where, version, target)
    if version in (0, target):
        return ()
    todo = tuple(range(version + 1, target + 1))
    missing = [v for v in todo if v not in steps]
    if missing:
        known = f"from v{min(steps) - 1}" if steps else f"only v{target}"
        raise ConfigError(
            f"store {where} has schema v{version}, which this Keel cannot upgrade (it knows"
            f" {known}): restore a backup or use the Keel release that made it"
        )
    return todo


def too_old(where: str, version: int, target: int) -> ConfigError:
    """The error a worker meets on a store it must not upgrade by itself."""
    return ConfigError(
        f"store {where} has schema v{version}, this Keel needs v{target}: run `{MIGRATE}`"
        " (the release step before new workers start), or set KEEL_AUTO_MIGRATE=true to"
        " let a worker upgrade it on open"
    )


def too_new(where: str, version: int, target: int) -> ConfigError:
    return ConfigError(
        f"store {where} has schema v{version}, newer than this Keel (v{target}); upgrade Keel"
    )
