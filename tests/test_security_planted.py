"""Issue 12's acceptance test: secrets planted in every kind of payload reach none of
the places an attacker or an over-curious viewer could read them.

Encryption at rest on (KEEL_ENCRYPTION_KEY), the App's default redactor, an OTLP
collector with message content capture on, a viewer signed in to the console and the
API. The planted values must be absent from the database file and its WAL, from every
API route and console page a viewer can open, from `keel show --json`, from the trace
store (raw and as read) and from what was exported over OTLP. Every check also has a
positive control, so none passes because nothing was looked at.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keel.observe.ids import hex_trace, trace_id
from tests.backends import at_rest, fresh_url
from tests.limits import WAIT
from tests.services.planted import SECRETS, around, every_get, planted

KEY = base64.b64encode(bytes(range(32))).decode()


def _leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {around(text, s)}" for s in SECRETS if s in text]


async def test_planted_secrets_reach_no_file_page_route_trace_or_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, otlp_http: Any
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    url = fresh_url(tmp_path)  # the session's backend (KEEL_TEST_STORE)
    leaks: list[str] = []
    async with planted(url) as env:
        app = env.app
        runs = [r.id for r in await app.list_runs()]
        assert len(runs) == 6
        # the control for the trace store: it holds spans (the root and execution ones)
        stored_spans = [await app.store.load_spans(hex_trace(trace_id(r))) for r in runs]
        assert any(stored_spans)
        # the store reads back in clear for the App that holds the key
        assert (await app.get_run("d1")).input["password"] in SECRETS

        server = env.server()
        pages = await every_get(env, server, "vera")  # every GET route, every id
        for path, body in pages.items():
            leaks += _leaks(f"viewer {path}", body)
        control = await every_get(env, server, "rita")  # a reviewer sees them raw
        assert any(s in body for body in control.values() for s in SECRETS)

        for run_id in runs:
            for span in await app.trace(run_id):
                text = json.dumps([span.attributes, span.events, span.status_message],
                                  default=str)
                leaks += _leaks(f"trace of {run_id} ({span.name})", text)
        await app.stop_worker()  # flush what the executions export
        otlp_http.wait_for(lambda spans: any(s.name.startswith("chat") for s in spans))
        exported = otlp_http.payload().decode("utf-8", "replace")
        assert "gen_ai.input.messages" in exported  # content capture was on
        leaks += _leaks("OTLP export", exported)

    env_vars = {**os.environ, "KEEL_STORE": url, "KEEL_ENCRYPTION_KEY": KEY}
    for run_id in runs:
        shown = subprocess.run(
            [sys.executable, "-m", "keel.cli", "show", run_id, "--json"],
            capture_output=True, text=True, cwd=tmp_path, env=env_vars, timeout=WAIT,
        )
        assert shown.returncode == 0, shown.stderr
        leaks += _leaks(f"keel show {run_id} --json", shown.stdout)
    raw = subprocess.run(  # the control: --raw prints what is stored, decrypted
        [sys.executable, "-m", "keel.cli", "show", "d1", "--json", "--raw"],
        capture_output=True, text=True, cwd=tmp_path, env=env_vars, timeout=WAIT,
    )
    assert any(s in raw.stdout for s in SECRETS), raw.stderr

    stored = at_rest(url)  # on SQLite: the file and WAL, before and after a checkpoint
    for s in SECRETS:
        if s.encode() in stored:
            leaks.append(f"the store at rest: {s!r}")
    assert not leaks, "\n".join(leaks)
