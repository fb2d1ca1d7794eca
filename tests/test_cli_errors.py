"""Every CLI error is one line (`error: ...`), a documented exit code, and writes nothing.

Real `python -m keel.cli` processes on the session's store backend. A damaged, read-only
or full store file is SQLite's own matter: tests/store/sqlite/test_sqlite_cli_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends import fresh_url
from tests.limits import WAIT
from tests.store_snapshot import snapshot_at

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
        self.store = store  # where a SQLite store's file goes (tests/store/sqlite/ damages it)
        self.url = fresh_url(store.parent, store.stem)  # the session's backend
        self.env = {
            **os.environ,
            "KEEL_STORE": self.url,
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
        """All the store holds (to prove a refused command wrote nothing)."""
        return snapshot_at(self.url)


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
        # As a terminal starts it: a test run from a background job would otherwise pass
        # on an ignored SIGINT, and `keel run` would never see the Ctrl+C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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
    assert not keel.store.exists()  # not even opened: on SQLite, no file was made


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
