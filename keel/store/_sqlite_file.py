"""The SQLite store's file: created whole or not at all, and its faults said plainly.

A new store is built beside its path and linked into place in one step, so a
file at the store path is always a complete store: an empty (0-byte) file there
was truncated or made by something else, and is refused rather than silently
turned into a new, empty store.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path

from keel.errors import StoreError

_ELSEWHERE = "or point KEEL_STORE at another store"


def prepare(path: str, init_script: str) -> None:
    """Make sure `path` holds a store: create its directory and a new store if absent."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory {str(p.parent)!r} for store {path!r}"
            f" ({exc.strerror or exc}): use a directory you can write, {_ELSEWHERE}",
            store=path,
            reason=str(exc),
        ) from None
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        _create(p, init_script)
        return
    except OSError as exc:
        raise StoreError(
            f"cannot read store {path!r} ({exc.strerror or exc})", store=path, reason=str(exc)
        ) from None
    if size == 0 and p.is_file():
        raise StoreError(
            f"store file {path!r} is empty (0 bytes): Keel never leaves a store empty, so it"
            " was truncated or created by something else. Restore it from a backup, or delete"
            f" it to start a new store, {_ELSEWHERE}",
            store=path,
            reason="empty file",
        )


def _create(p: Path, init_script: str) -> None:
    tmp = p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(init_script)
        finally:
            db.close()
        try:
            os.link(tmp, p)
        except FileExistsError:
            pass  # another process created the store first: everyone uses that one
        except OSError:  # a file system without hard links
            if not p.exists():
                os.rename(tmp, p)
    except sqlite3.Error as exc:
        raise fault(str(p), exc) from None
    except OSError as exc:
        raise StoreError(
            f"cannot create store {str(p)!r} ({exc.strerror or exc}):"
            f" {_dir_problem(str(p)) or 'check its directory'}, {_ELSEWHERE}",
            store=str(p),
            reason=str(exc),
        ) from None
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{tmp}{suffix}")


def is_fault(exc: BaseException) -> bool:
    """True for SQLite errors about the file or disk (not programming errors)."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def fault(path: str, exc: sqlite3.Error) -> StoreError:
    """A StoreError saying what is wrong with the store at `path` and what to do."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    reason = str(exc)
    where = f"store {path!r}"
    said = f"(SQLite: {reason})"
    kind = _kind(code, reason, path)
    if kind == "full":
        msg = (
            f"{where} cannot be written: its disk is full {said}. Free space on that file"
            " system, then retry"
        )
    elif kind in ("read-only", "cannot open"):
        problem = _dir_problem(path)
        verb = "is read-only" if kind == "read-only" else "cannot be opened"
        msg = (
            f"{where} {verb}{': ' + problem if problem else ''} {said}. Make the file and"
            " its directory writable (SQLite keeps -wal and -shm files beside it),"
            f" {_ELSEWHERE}"
        )
    elif kind == "corrupt":
        msg = (
            f"{where} is corrupt or not a Keel store {said}. Restore it from a backup, {_ELSEWHERE}"
        )
    elif kind == "locked":
        msg = (
            f"{where} stayed locked by another process for 30 s {said}. Retry; if it"
            " persists, look for a process holding a long write transaction"
        )
    elif kind == "io":
        msg = f"{where}: the disk reported an I/O error {said}. Check the disk, then retry"
    else:
        msg = f"{where} failed {said}"
    return StoreError(msg, store=path, reason=reason, sqlite_code=code or None, kind=kind)


def _kind(code: str, reason: str, path: str) -> str:
    if code.startswith("SQLITE_FULL") or "disk is full" in reason:
        return "full"
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or (
        "malformed" in reason or "not a database" in reason
    ):
        return "corrupt"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in reason:
        return "locked"
    if code.startswith(("SQLITE_READONLY", "SQLITE_PERM")) or "readonly" in reason:
        return "read-only"
    cannot_open = code.startswith("SQLITE_CANTOPEN") or "unable to open" in reason
    if cannot_open and _dir_problem(path):
        return "cannot open"
    # A full disk shows up as a generic I/O or open error when SQLite grows its -shm.
    if (cannot_open or code.startswith("SQLITE_IOERR") or "I/O error" in reason) and (
        _no_space(path)
    ):
        return "full"
    if cannot_open:
        return "cannot open"
    if code.startswith("SQLITE_IOERR") or "I/O error" in reason:
        return "io"
    return "other"


def _no_space(path: str) -> bool:
    """True when the file system holding the store has (next to) no space left: SQLite
    then reports some writes (its -shm index, say) only as a generic I/O error."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def _dir_problem(path: str) -> str:
    """Why `path` or its directory cannot be written, if that can be told ('' if not)."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        return f"{target} is a directory, not a store file"
    for p in (target, os.path.dirname(target)):
        if not os.path.exists(p):
            continue
        try:
            if os.statvfs(p).f_flag & os.ST_RDONLY:
                return f"{p} is on a read-only file system"
        except OSError:
            return f"{p} cannot be inspected"
        if not os.access(p, os.W_OK):
            return f"{p} is not writable by this user"
    return ""
