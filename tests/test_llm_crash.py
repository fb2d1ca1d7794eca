"""SIGKILL a worker in the middle of an agent loop: the resumed run re-sends no model
call that had completed (each journaled turn is replayed from the journal), re-runs
at most what was in flight, and succeeds.

The app is tests/apps/llm_app.py; its model and tool log every call they serve.
"""

from __future__ import annotations

from collections import Counter

from tests.apps.harness import Harness, Kill

MODULE = "tests.apps.llm_app"
TURNS = 4


def calls(h: Harness) -> list[tuple[str, int, int]]:
    """(what, n, pid) per model call or tool execution, in order."""
    try:
        text = (h.data / "llm.log").read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        what, n, pid = line.split()
        out.append((what, int(n), int(pid)))
    return out


# Two kills, then a worker that finishes: the first during turn 2's tool call, the
# second while model turn 3 is being answered (each worker imports LiteLLM: ~3 s).
KILLS = [("tool", 2), ("model", 3)]


async def test_sigkill_mid_agent_loop_resends_no_completed_model_call(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    app = h.app(MODULE)
    handle = await app.start("job", id="agent-run", execute=False)

    kills: list[tuple[Kill, int]] = []  # each kill and the log length at it
    for what, n in KILLS:
        proc = h.spawn(MODULE, KEEL_TEST_BLOCK_AT=f"{what}:{n}", KEEL_TEST_BLOCK=120)
        await h.wait_until(
            lambda w=what, n=n, pid=proc.pid: (w, n, pid) in calls(h),
            timeout=90,
            what=f"{what} {n} to start in worker {proc.pid}",
            procs=[proc],
        )
        kill = await h.kill(proc, app, handle.id)
        assert not kill.run_finished
        kills.append((kill, len(calls(h))))

    # what was journaled at each kill: the model turns already answered
    first, second = (kill.journaled for kill, _ in kills)
    turn = f"{handle.id}:llm:agent#"
    assert {k for k in first if k.startswith(turn)} == {turn + "0", turn + "1"}
    assert {k for k in second if k.startswith(turn)} == {turn + "0", turn + "1"}
    assert f"{handle.id}:step#1" not in first and f"{handle.id}:step#1" in second

    final = h.spawn(MODULE)
    info = await h.wait_status(app, handle.id, "SUCCEEDED", timeout=90, procs=[final])
    assert info.result == {"content": f"done after {TURNS - 1} steps", "turns": TURNS}
    assert info.attempts >= 3  # claimed by each of the three workers

    log = calls(h)
    for kill, log_len in kills:
        answered = {int(k.rsplit("#", 1)[1]) + 1 for k in kill.journaled if k.startswith(turn)}
        resent = [n for what, n, _ in log[log_len:] if what == "model" and n in answered]
        assert not resent, f"model turns {resent} were answered before a kill and sent again"
    # every turn sent once, except the one in flight at the second kill; every tool run
    # once, except the one in flight at the first kill
    assert Counter(n for what, n, _ in log if what == "model") == {1: 1, 2: 1, 3: 2, 4: 1}
    assert Counter(n for what, n, _ in log if what == "tool") == {1: 1, 2: 2, 3: 1}
    assert {pid for _, _, pid in log[kills[-1][1] :]} == {final.pid}

    # the journal: one ok step per model turn and per tool call, in order
    steps = await app.steps(handle.id)
    expected = []
    for t in range(TURNS):
        expected.append(f"llm:agent#{t}")
        if t < TURNS - 1:
            expected.append(f"step#{t}")
    assert [s.key for s in steps] == expected
    assert all(s.status.value == "ok" for s in steps)
    assert all(s.attempts == 1 for s in steps if s.kind.value == "llm")
