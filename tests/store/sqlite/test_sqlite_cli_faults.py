"""CLI errors from a damaged, unreachable, read-only or full SQLite store file: one line,
a documented exit code, and the file left as it was.

Real `python -m keel.cli` processes on real store files; read-only stores and a full
disk are real too (tmpfs and bind mounts, as root). The commands and their checks are
tests/test_cli_errors.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import fresh_url
from tests.limits import WAIT
from tests.test_cli_errors import APP, STORE, Keel, _until


@pytest.fixture()
def keel(tmp_path: Path) -> Keel:
    return Keel(tmp_path, tmp_path / "store" / "keel.db")


# -- the store ------------------------------------------------------------------------


def _commands() -> list[list[str]]:
    return [
        ["runs"],
        ["show", "w1"],
        ["run", f"{APP}:echo", "--detach", "--input", '{"data": 1}'],
        ["signal", "w1", "go"],
        ["worker", APP],
    ]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_store_is_one_line_for_every_command(keel: Keel, damage: str) -> None:
    (keel.tmp / "in.json").write_text(json.dumps({"data": ["page"] * 20_000}))
    assert keel("run", f"{APP}:echo", "--detach", "--id", "w1", "--input", "@in.json").code == 0
    data = keel.store.read_bytes()
    assert len(data) > 16384
    damaged = data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data))
    keel.store.write_bytes(damaged)
    for command in _commands():
        res = keel(*command)
        res.one_line_error(STORE, str(keel.store), "corrupt or not a Keel store", "backup")
        assert keel.store.read_bytes() == damaged  # left as it was


def test_an_empty_store_file_is_refused_not_replaced(keel: Keel) -> None:
    keel.store.parent.mkdir()
    keel.store.write_bytes(b"")
    for command in _commands():
        res = keel(*command)
        res.one_line_error(STORE, str(keel.store), "empty (0 bytes)", "delete it")
    assert keel.store.read_bytes() == b""
    assert sorted(p.name for p in keel.store.parent.iterdir()) == ["keel.db"]
    # a store path that does not exist yet is a new store
    keel.store.unlink()
    assert keel.runs() == {}
    assert keel.store.stat().st_size > 0


def test_a_store_directory_that_cannot_be_created(keel: Keel, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    for command in _commands():
        res = keel(*command, KEEL_STORE=fresh_url(tmp_path / "a-file" / "sub"))
        res.one_line_error(STORE, "cannot create the directory", "KEEL_STORE")
    assert (tmp_path / "a-file").read_text() == "not a directory"


# -- read-only stores and a full disk: real mounts ------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own (needs root); skipped when that is impossible, but never
    under CI=true, where the test must run."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        if os.geteuid() != 0:
            raise PermissionError("not root")
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt))
    except (OSError, subprocess.CalledProcessError) as exc:
        why = f"cannot mount a tmpfs here ({exc}): read-only and full-disk stores untested"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-R", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("what", ["directory", "file"])
def test_a_read_only_store_refuses_a_detached_run_and_stops_the_worker(
    tmp_path: Path, tmpfs: Path, what: str
) -> None:
    keel = Keel(tmp_path, tmpfs / "keel.db")
    assert keel("run", f"{APP}:echo", "--detach", "--id", "p1", "--input", '{"data": 1}').code == 0
    before = keel.dump()
    if what == "directory":
        _mount("-o", "remount,ro", str(tmpfs))
    else:  # only the store file is read-only; its directory stays writable
        _mount("--bind", str(keel.store), str(keel.store))
        _mount("-o", "remount,ro,bind", str(keel.store))
    try:
        res = keel("run", f"{APP}:echo", "--detach", "--id", "p2", "--input", '{"data": 2}')
        res.one_line_error(STORE, str(keel.store), "read-only", "writable")
        res = keel("worker", APP)
        line = res.one_line_error(STORE, str(keel.store), "read-only")
        if what == "file":  # it opened the store, then could not claim the PENDING run
            assert "keel worker stopped" in line and "No run was failed" in line
    finally:
        if what == "directory":
            _mount("-o", "remount,rw", str(tmpfs))
        else:
            subprocess.run(["umount", str(keel.store)], check=True)
    assert keel.dump() == before
    assert keel.runs() == {"p1": "PENDING"}


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_a_detached_run(tmp_path: Path, tmpfs: Path) -> None:
    keel = Keel(tmp_path, tmpfs / "keel.db")
    assert keel("run", f"{APP}:echo", "--detach", "--id", "p1", "--input", '{"data": 1}').code == 0
    before = keel.dump()
    filler = _fill(tmpfs)
    (tmp_path / "big.json").write_text(json.dumps({"data": "q" * 200_000}))  # off the tmpfs
    res = keel("run", f"{APP}:echo", "--detach", "--id", "p2", "--input", "@big.json")
    res.one_line_error(STORE, str(keel.store), "disk is full", "Free space")
    filler.unlink()
    assert keel.dump() == before


@pytest.mark.parametrize("runner", ["worker", "run"])
def test_a_full_disk_pauses_the_worker_and_never_fails_the_run(
    tmp_path: Path, tmpfs: Path, runner: str
) -> None:
    keel = Keel(tmp_path, tmpfs / "store" / "keel.db")
    scratch = tmpfs / "scratch"  # the tool fills the disk the store is on, once
    scratch.mkdir()
    start = ["run", f"{APP}:fill", "--id", "f1", "--input", json.dumps({"directory": str(scratch)})]
    if runner == "worker":
        # `keel worker` pauses through the fault and resumes by itself once space is freed
        assert keel(*start, "--detach").code == 0
        log = tmp_path / "worker.err"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "keel.cli", "worker", APP],
                cwd=tmp_path,
                env={**keel.env, "KEEL_LEASE_SECONDS": "1.5"},  # a heartbeat every 0.5 s
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            _until(lambda: "keel worker paused" in log.read_text(), "the worker to pause")
            text = log.read_text()
            assert "disk is full" in text and "No run was failed" in text, text
            assert proc.poll() is None  # paused, not gone
            assert keel.runs()["f1"] in ("PENDING", "RUNNING")  # not FAILED
            (scratch / "filler").unlink()
            _until(lambda: keel.runs()["f1"] == "SUCCEEDED", "the run to finish after it")
            assert "keel worker resumed" in log.read_text()
        finally:
            proc.terminate()
            assert proc.wait(timeout=WAIT) == 0, log.read_text()
        done = keel("show", "f1", "--json")
        assert json.loads(done.out)["result"] == "second call"  # it ran again, at least once
        return
    res = keel(*start)  # `keel run` executes it in-process: it stops with one line
    res.one_line_error(STORE, str(keel.store), "disk is full")
    (scratch / "filler").unlink()
    assert keel.runs()["f1"] in ("PENDING", "RUNNING")  # not FAILED
    done = keel("run", f"{APP}:fill", "--id", "f1", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["result"] == "second call"  # the step ran again, at least once
