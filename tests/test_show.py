"""`keel show` as a user runs it (a real `python -m keel.cli` subprocess): each state
change on the step after which the workflow made it, the change after the last step,
patch deltas folded to the exact final state, and a running run's finished map items
under a placeholder for the map still in progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends import fresh_url
from tests.limits import WAIT

APP = str(Path(__file__).parent / "apps" / "show_app.py")
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = WAIT  # a bound, never a timing (tests/limits.py)


class Keel:
    """Runs `python -m keel.cli` against one store file in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.env = {
            **os.environ,
            "KEEL_STORE": fresh_url(tmp_path),
            "KEEL_POLL_INTERVAL": "0.02",
            "COLUMNS": "200",  # Rich wraps at the terminal width; keep a step on one line
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "keel.cli", *args]

    def __call__(self, *args: str) -> str:
        res = subprocess.run(
            self.argv(*args), cwd=self.dir, env=self.env, capture_output=True, text=True,
            timeout=DEADLINE,
        )
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    def show(self, run_id: str, *extra: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self("show", run_id, "--json", *extra))
        return data


@pytest.fixture
def keel_cli(tmp_path: Path) -> Keel:
    return Keel(tmp_path)


def line(text: str, start: str) -> str:
    """The one line of `keel show`'s tree whose step name starts with `start`."""
    found = [ln for ln in text.splitlines() if ln.lstrip("│├└─ ").startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def steps_by_key(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["key"]: s for s in data["steps"]}


def test_each_change_is_shown_on_the_step_after_which_it_was_made(keel_cli: Keel) -> None:
    keel_cli("run", f"{APP}:staged", "--id", "s1")
    text = keel_cli("show", "s1")
    assert "state: stage" in line(text, "fetch#0 ")
    assert "state: count" in line(text, "fetch#1 ")
    # the change after the last step is in no journal record, only in the final state
    assert "state: stage" in line(text, "fetch#2 ")
    assert "(start)" not in text  # nothing changed before the first step
    assert 'final state: {"stage": "done", "count": 30' in text

    data = keel_cli.show("s1")
    final = {"stage": "done", "count": 30, "log": [], "verdict": "total 60"}
    assert data["state"] == final
    steps = steps_by_key(data)
    assert steps["fetch#0"]["state_changed"] == ["stage"]
    assert steps["fetch#0"]["state_after"]["stage"] == "fetched 10"
    assert steps["fetch#1"]["state_changed"] == ["count"]
    assert steps["fetch#1"]["state_after"] == {**steps["fetch#0"]["state_after"], "count": 30}
    assert "stage" in steps["fetch#2"]["state_changed"]
    assert steps["fetch#2"]["state_after"] == final
    # the raw journal records stay as they are: a delta rides on the step after the change
    assert steps["fetch#1"]["state_delta"] == {"stage": "fetched 10"}
    assert steps["fetch#2"]["state_delta"] == {"count": 30}
    assert "state_delta" not in steps["fetch#0"]
    # without the workflow, fields no record changed start with their final values
    assert data["state_start"]["initial_from"] == "final state"

    # with the app loaded, the start is the state model's defaults: a field first set
    # after the last step shows as changed there too
    text = keel_cli("show", "s1", "--app", APP)
    assert "state: stage, verdict" in line(text, "fetch#2 ")
    data = keel_cli.show("s1", "--app", APP)
    assert data["state_start"] == {
        "initial": {"stage": "", "count": 0, "log": [], "verdict": ""},
        "initial_from": "workflow",
        "changed": [],
        "state": {"stage": "", "count": 0, "log": [], "verdict": ""},
    }
    steps = steps_by_key(data)
    start = data["state_start"]["state"]
    assert steps["fetch#0"]["state_after"] == {**start, "stage": "fetched 10"}
    assert steps["fetch#2"]["state_changed"] == ["stage", "verdict"]
    assert steps["fetch#2"]["state_after"] == final


def test_show_app_names_what_is_wrong_in_one_line(keel_cli: Keel, tmp_path: Path) -> None:
    keel_cli("run", f"{APP}:staged", "--id", "s1")
    other = tmp_path / "other.py"
    other.write_text("import keel\napp = keel.App()\n")
    for ref, message in [
        ("nope.py", "no such file: nope.py"),
        (str(other), f"{other} has no workflow 'staged' (run s1's workflow); registered: none"),
    ]:
        res = subprocess.run(
            keel_cli.argv("show", "s1", "--app", ref), cwd=tmp_path, env=keel_cli.env,
            capture_output=True, text=True, timeout=DEADLINE,
        )
        assert res.returncode == 2 and res.stdout == "", res
        assert res.stderr == f"error: {message}\n", res.stderr


def test_patch_deltas_fold_to_the_exact_final_state(keel_cli: Keel) -> None:
    keel_cli("run", f"{APP}:grows", "--id", "g1")
    data = keel_cli.show("g1", "--app", APP)
    entries = [f"entry {i}" for i in range(50)]
    assert data["state"]["log"] == [*entries, "end"]
    steps = steps_by_key(data)
    # the journal holds appends, not the whole list at every step
    assert steps["fetch#10"]["state_delta"] == {"$patch": {"log": {"append": ["entry 10"]}}}
    for i in range(49):
        assert steps[f"fetch#{i}"]["state_after"]["log"] == entries[: i + 2], i
        assert steps[f"fetch#{i}"]["state_changed"] == ["log"]
    assert steps["fetch#49"]["state_after"] == data["state"]
    assert data["state_start"]["state"]["log"] == ["entry 0"]
    text = keel_cli("show", "g1")
    assert "(start)  state: log" in text and "state: log" in line(text, "fetch#49 ")


def test_a_running_run_shows_its_finished_map_items_under_a_placeholder(
    keel_cli: Keel, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    args = ["run", f"{APP}:held", "--id", "m1", "--input", json.dumps({"release": str(release)})]
    proc = subprocess.Popen(
        keel_cli.argv(*args), cwd=tmp_path, env=keel_cli.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # items 0 and 1 finish; 2 and 3 wait for the release file, so the map (recorded
        # only when it ends) is still running
        deadline = time.monotonic() + DEADLINE
        keys: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            res = subprocess.run(
                keel_cli.argv("show", "m1", "--json"), cwd=tmp_path, env=keel_cli.env,
                capture_output=True, text=True, timeout=DEADLINE,
            )
            if res.returncode == 0:
                shown = {s["key"]: s for s in json.loads(res.stdout)["steps"]}
                keys = set(shown)
                if {"map:part#0/0", "map:part#0/1"} <= keys:
                    break
            time.sleep(0.1)
        assert {"map:part#0/0", "map:part#0/1"} <= keys, (keys, proc.poll())
        # only the mark that the map started (its item count): its summary comes at its end
        assert shown["map:part#0"]["status"] == "pending"
        assert shown["map:part#0"]["input"] == {"items": 4}

        text = keel_cli("show", "m1")
        assert "RUNNING" in line(text, "m1 ")
        assert "map  (running)" in line(text, "map:part#0 ")
        lines = text.splitlines()
        at = lines.index(line(text, "map:part#0 "))
        below = "\n".join(lines[at + 1 :])
        # the finished items and their steps, nested under the map in progress
        assert line(below, "0  child  ok") and line(below, "1  child  ok")
        assert "state: stage" in line(below, "0  child  ok")  # set before its first step
        assert below.count("hold#0  tool  ok") == 2
        assert "(start)  state: stage" in text
    finally:
        release.touch()
        out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, (out, err)
    text = keel_cli("show", "m1", "--app", APP)
    assert "(running)" not in text and "SUCCEEDED" in line(text, "m1 ")
    assert "state: count" in line(text, "map:part#0 ")
    data = keel_cli.show("m1", "--app", APP)
    assert steps_by_key(data)["map:part#0"]["state_after"] == data["state"]
