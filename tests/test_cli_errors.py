"""Every CLI error is one line (`error: ...`), a documented exit code, and writes nothing.

Real `python -m keel.cli` processes on real store files; read-only stores and a full
disk are real too (tmpfs and bind mounts, as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.limits import WAIT

APP = str(Path(__file__).parent / "apps" / "cli_errors_app.py")
WAITS = str(Path(__file__).parent / "apps" / "cli_app.py")
USAGE, STORE = 2, 3  # exit codes (README "Exit codes")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error: ")]

    def one_line_error(self, code: int, *needles: str) -> str:
        """Assert: exit `code`, exactly one `error:` line holding each needle, no traceback."""
        assert self.code == code, (self.code, self.out, self.err)
        assert "Traceback" not in self.err and "╭" not in self.err, self.err
        assert len(self.error_lines) == 1, self.err
        line = self.error_lines[0]
        assert self.err.strip().splitlines()[-1] == line, self.err  # nothing after it
        for needle in needles:
            assert needle in line, (needle, line)
        return line


class Keel:
    """`python -m keel.cli` on one store."""

    def __init__(self, tmp: Path, store: Path) -> None:
        self.tmp = tmp
        self.store = store
        self.env = {
            **os.environ,
            "KEEL_STORE": f"sqlite:///{store}",
            "KEEL_POLL_INTERVAL": "0.02",
            "KEEL_TRACING": "false",
        }

    def __call__(
        self, *args: str, stdin: bytes | None = None, timeout: float = 120, **env: str
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "keel.cli", *args],
            input=stdin,
            capture_output=True,
            cwd=self.tmp,
            env={**self.env, **env},
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def runs(self) -> dict[str, str]:
        res = self("runs", "--json")
        assert res.code == 0, res.err
        return {r["id"]: r["status"] for r in json.loads(res.out)}

    def dump(self) -> list[str]:
        """Every row of the store (to prove a refused command wrote nothing)."""
        with contextlib.closing(sqlite3.connect(self.store)) as db:
            return list(db.iterdump())


@pytest.fixture()
def keel(tmp_path: Path) -> Keel:
    return Keel(tmp_path, tmp_path / "store" / "keel.db")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- JSON options: depth ----------------------------------------------------------------

JSON_OPTIONS = {
    "--input": lambda doc: ["run", f"{APP}:echo", "--input", f'{{"data": {doc}}}'],
    "--payload": lambda doc: ["signal", "w1", "go", "--payload", doc],
    "--args": lambda doc: ["approvals", "edit", "rev_x", "--args", doc],
    "--output": lambda doc: ["approvals", "correct", "rev_x", "--output", doc],
    "--result": lambda doc: ["escalations", "resolve", "esc_x", "--result", doc],
    "--label": lambda doc: ["review", "verdict", "rev_x", "--incorrect", "--label", doc],
}


@pytest.mark.parametrize("depth", [1000, 900, 150])
def test_json_nested_too_deep_is_one_line_for_every_option(keel: Keel, depth: int) -> None:
    assert keel("run", f"{WAITS}:waits", "--id", "w1").code == 0
    before = keel.dump()
    for option, command in JSON_OPTIONS.items():
        res = keel(*command(nested(depth)))
        res.one_line_error(USAGE, option, "levels deep; the limit is 100")
        assert keel.dump() == before, option  # nothing written


def test_json_at_the_depth_limit_runs_and_reads_back(keel: Keel) -> None:
    res = keel("run", f"{APP}:echo", "--id", "d1", "--json", "--input", f'{{"data": {nested(99)}}}')
    assert res.code == 0 and json.loads(res.out)["status"] == "SUCCEEDED", res.err
    assert keel.runs() == {"d1": "SUCCEEDED"}
    shown = keel("show", "d1", "--json")
    assert shown.code == 0 and json.loads(shown.out)["result"] == json.loads(nested(99))


# -- JSON options: big inputs from a file or stdin ------------------------------------


def test_input_from_a_file_or_stdin_beyond_the_argument_limit(keel: Keel) -> None:
    big = "x" * (300 * 1024)  # Linux caps one argument at 128 KiB
    (keel.tmp / "big.json").write_text(json.dumps({"text": big}))
    res = keel("run", f"{APP}:size", "--json", "--input", "@big.json")
    assert res.code == 0 and json.loads(res.out)["result"] == len(big), res.err
    stdin = json.dumps({"text": big}).encode()
    res = keel("run", f"{APP}:size", "--json", "--input", "-", stdin=stdin)
    assert res.code == 0 and json.loads(res.out)["result"] == len(big), res.err
    # payloads too: one through a file, one through stdin
    (keel.tmp / "payload.json").write_text(json.dumps(big))
    for i, (value, stdin) in enumerate([("@payload.json", None), ("-", json.dumps(big).encode())]):
        assert keel("run", f"{APP}:waits", "--id", f"w{i}").code == 0
        sent = keel("signal", f"w{i}", "go", "--payload", value, stdin=stdin)
        assert sent.code == 0, sent.err
        done = keel("run", f"{APP}:waits", "--id", f"w{i}", "--json")
        assert json.loads(done.out)["result"] == len(big)


def test_input_over_the_size_limit_is_refused(keel: Keel) -> None:
    (keel.tmp / "two-k.json").write_text(json.dumps({"text": "y" * 2000}))
    res = keel("run", f"{APP}:size", "--input", "@two-k.json", KEEL_MAX_INPUT_BYTES="1000")
    res.one_line_error(USAGE, "--input @two-k.json", "larger than the 1000 bytes input limit")
    over = b'{"text": "' + b"z" * (16 * 1024 * 1024) + b'"}'  # the default limit: 16 MiB
    res = keel("run", f"{APP}:size", "--input", "-", stdin=over)
    res.one_line_error(USAGE, "--input from stdin", "larger than the 16 MiB input limit")
    res = keel("run", f"{APP}:size", "--input", "@missing.json")
    res.one_line_error(USAGE, "cannot read 'missing.json'")
    res = keel("run", f"{APP}:size", "--input", "@")
    res.one_line_error(USAGE, "needs a file name")
    assert keel.runs() == {}


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
        res = keel(*command, KEEL_STORE=f"sqlite:///{tmp_path}/a-file/sub/keel.db")
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


def _until(pred: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- interrupted --------------------------------------------------------------------------


def test_ctrl_c_during_a_command_exits_130_without_a_traceback(keel: Keel) -> None:
    """README "Exit codes": 130 interrupted (Ctrl+C), here `keel run` mid-step."""
    marker = keel.tmp / "started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "run", f"{APP}:naps", "--id", "n1",
         "--input", json.dumps({"marker": str(marker)})],
        cwd=keel.tmp,
        env=keel.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _until(marker.exists, "the step to start")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode(), err.decode()


# -- usage errors, ids, modules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["worker"], "Missing argument"),
        (["worker", APP, "--concurrency", "0"], "--concurrency"),
        (["runs", "--bogus"], "No such option: --bogus"),
        (["show"], "Missing argument"),
        (["signal", "w1"], "Missing argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_are_one_line(keel: Keel, args: list[str], needle: str) -> None:
    res = keel(*args)
    res.one_line_error(USAGE, needle, "--help")
    assert not keel.store.exists()


def test_an_empty_run_id_is_refused(keel: Keel) -> None:
    res = keel("run", f"{APP}:echo", "--id", "", "--input", '{"data": 1}')
    res.one_line_error(USAGE, "run id ''", "1-200 characters")
    assert keel.runs() == {}


def test_a_module_without_an_app_is_named_as_given(keel: Keel) -> None:
    (keel.tmp / "noapp.py").write_text("X = 1\n")
    assert keel("run", f"{APP}:echo", "--id", "e1").code == 0
    for args in (
        ["run", "noapp.py:wf"],
        ["worker", "noapp.py"],
        ["serve", "noapp.py"],
        ["show", "e1", "--app", "noapp.py"],
    ):
        line = keel(*args).one_line_error(USAGE, "noapp.py defines no keel.App", "keel.App()")
        assert line.startswith("error: noapp.py defines"), line  # as given: not its path
        assert "keel_user_" not in line


# -- signals ----------------------------------------------------------------------------


def test_signal_names_what_the_run_waits_for_and_queues_only_when_asked(keel: Keel) -> None:
    assert keel("run", f"{WAITS}:waits", "--id", "w1").code == 0
    before = keel.dump()
    res = keel("signal", "w1", "wrongname")
    res.one_line_error(USAGE, "not waiting for signal 'wrongname'", "it waits for 'go'", "--queue")
    assert keel.dump() == before
    queued = keel("signal", "w1", "later", "--queue")
    assert queued.code == 0 and "queued" in queued.out and "wait_for('later')" in queued.out
    sent = keel("signal", "w1", "go", "--payload", '"now"')
    assert sent.code == 0 and "signal 'go' delivered to w1" in sent.out
    assert "no live worker serves workflow 'waits'" in sent.out  # none runs here
    again = keel("signal", "w1", "go", "--payload", '"twice"')  # the first is not taken yet
    again.one_line_error(USAGE, "has not taken the 'go' signal", "--queue")
    done = keel("run", f"{WAITS}:waits", "--id", "w1", "--json")
    assert json.loads(done.out)["result"] == "got now"
    ended = keel("signal", "w1", "go", "--queue")
    ended.one_line_error(USAGE, "already SUCCEEDED", "not delivered")
