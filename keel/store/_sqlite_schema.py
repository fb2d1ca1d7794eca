"""The SQLite store's schema history: how a store made by an earlier Keel is brought up
to date (one transaction, whichever version it starts from). A new store is made from
the neutral schema (`keel.store.sql.schema`) instead; SQLite stores keep their version
in `PRAGMA user_version`.

`SCHEMA` (version 1) and `MIGRATIONS` are history: never edited, only appended to, and
kept whole so tests can make a store of any earlier version.
"""

from __future__ import annotations

from keel.store.sql.schema import VERSION, ddl
from keel.store.sql.sqlite_dialect import SQLiteDialect

SCHEMA_VERSION = VERSION
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    result TEXT,
    error TEXT,
    state TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    wake_at REAL,
    waiting_on TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL
);
CREATE INDEX IF NOT EXISTS runs_ready ON runs(status, wake_at);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    scope TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    wake_at REAL,
    state_delta TEXT,
    blob TEXT,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    consumed_by TEXT
);
CREATE INDEX IF NOT EXISTS signals_pending ON signals(run_id, name) WHERE consumed_by IS NULL;
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
"""

# Each entry upgrades the schema by one version; a fresh store runs them all in order.
MIGRATIONS = {
    2: """
ALTER TABLE steps ADD COLUMN fallback TEXT;
CREATE TABLE IF NOT EXISTS escalations (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    packet TEXT NOT NULL,
    resolution TEXT,
    created_at REAL NOT NULL,
    resolved_at REAL,
    resolved_by TEXT
);
CREATE INDEX IF NOT EXISTS escalations_by_status ON escalations(status, created_at);
""",
    3: """
ALTER TABLE runs ADD COLUMN tenant TEXT;
CREATE TABLE IF NOT EXISTS usage (
    run_id TEXT NOT NULL,
    step_key TEXT NOT NULL,
    workflow TEXT NOT NULL,
    tenant TEXT,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hit INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, step_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_workflow ON usage(workflow, created_at);
CREATE INDEX IF NOT EXISTS usage_by_tenant ON usage(tenant, created_at);
CREATE TABLE IF NOT EXISTS kv_cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
""",
    4: """
CREATE TABLE IF NOT EXISTS spans (
    span_id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    parent_id TEXT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT,
    links TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_id, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_end ON spans(end_ns);
""",
    5: """
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    step TEXT,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    decision TEXT,
    deadline REAL,
    created_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reviews_open ON reviews(kind, status, queue, created_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit(target, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS sample_counts (
    workflow TEXT NOT NULL,
    day TEXT NOT NULL,
    seen INTEGER NOT NULL,
    PRIMARY KEY (workflow, day)
) WITHOUT ROWID;
""",
    # Spans clustered by trace: a run's spans share pages instead of landing on random
    # ones (a span id is a hash), which halves the bytes written per span.
    6: """
CREATE TABLE spans_by_trace_v6 (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT,
    links TEXT,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
INSERT INTO spans_by_trace_v6 SELECT trace_id, span_id, parent_id, run_id, name, kind,
    start_ns, end_ns, status, status_message, attributes, events, links FROM spans;
DROP TABLE spans;
ALTER TABLE spans_by_trace_v6 RENAME TO spans;
CREATE INDEX IF NOT EXISTS spans_by_end ON spans(end_ns);
""",
    # What a tool step was called with, and its failed attempts: traces are built from
    # the journal itself, so it keeps what a trace needs.
    7: """
ALTER TABLE steps ADD COLUMN input TEXT;
ALTER TABLE steps ADD COLUMN attempt_log TEXT;
""",
    # Budget checks sum today's cost per workflow / tenant: covering indexes answer them
    # from the index alone.
    8: """
DROP INDEX IF EXISTS usage_by_workflow;
DROP INDEX IF EXISTS usage_by_tenant;
CREATE INDEX IF NOT EXISTS usage_wf_cost ON usage(workflow, created_at, cost_usd);
CREATE INDEX IF NOT EXISTS usage_tenant_cost ON usage(tenant, created_at, cost_usd);
""",
    # Review-console users: API tokens are stored only as salted hashes.
    9: """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
""",
    # Review-console login sessions: only a hash of the cookie value is kept.
    10: """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    client TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions(expires_at);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user);
""",
    # The console finds a run's requests, and the latest decisions, without scanning.
    11: """
CREATE INDEX IF NOT EXISTS reviews_by_run ON reviews(run_id);
CREATE INDEX IF NOT EXISTS reviews_by_decision ON reviews(decided_at);
CREATE INDEX IF NOT EXISTS escalations_by_run ON escalations(run_id);
""",
    # Running cost totals per workflow and tenant per UTC day: budget checks read one
    # row instead of summing the day's usage on every model call.
    12: """
CREATE TABLE IF NOT EXISTS usage_daily (
    scope TEXT NOT NULL,
    day REAL NOT NULL,
    cost_usd REAL NOT NULL,
    PRIMARY KEY (scope, day)
) WITHOUT ROWID;
INSERT OR REPLACE INTO usage_daily (scope, day, cost_usd)
    SELECT 'wf:' || workflow, CAST(created_at / 86400 AS INTEGER) * 86400, SUM(cost_usd)
    FROM usage GROUP BY 1, 2;
INSERT OR REPLACE INTO usage_daily (scope, day, cost_usd)
    SELECT 'tenant:' || tenant, CAST(created_at / 86400 AS INTEGER) * 86400, SUM(cost_usd)
    FROM usage WHERE tenant IS NOT NULL GROUP BY 1, 2;
""",
    # Worker heartbeats: which workers are live, and which workflows they serve.
    13: """
CREATE TABLE IF NOT EXISTS workers (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    workflows TEXT NOT NULL,
    embedded INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    beat_every REAL NOT NULL
) WITHOUT ROWID;
""",
    # Retention (docs/storage.md): purges find ended runs, expired cache entries, a run's
    # signals and spans, and the steps sharing a blob by index; purged runs' usage is
    # kept as per-day totals; the audit log keeps no payload, so what earlier versions
    # logged of decisions (arguments, outputs, notes) becomes the names of its fields,
    # overwritten in place (secure_delete: left on for the connection that upgrades, as
    # most builds have it).
    14: """
CREATE INDEX IF NOT EXISTS runs_ended ON runs(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS steps_by_blob ON steps(blob) WHERE blob IS NOT NULL;
CREATE INDEX IF NOT EXISTS signals_by_run ON signals(run_id);
CREATE INDEX IF NOT EXISTS spans_by_run ON spans(run_id);
CREATE INDEX IF NOT EXISTS kv_cache_expiry ON kv_cache(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage_rollup (
    day REAL NOT NULL,
    workflow TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hits INTEGER NOT NULL,
    PRIMARY KEY (day, workflow, tenant, model)
) WITHOUT ROWID;
PRAGMA secure_delete=1;
DROP TRIGGER IF EXISTS audit_no_update;
UPDATE audit SET detail = json_object(
    'fields', (SELECT json_group_array(key) FROM
        (SELECT key FROM json_each(audit.detail) WHERE type != 'null' ORDER BY key)),
    'scrubbed', json('true'))
WHERE json_valid(detail) AND json_type(detail) = 'object' AND (
    json_type(detail, '$.args') IS NOT NULL OR json_type(detail, '$.original') IS NOT NULL
    OR json_type(detail, '$.output') IS NOT NULL OR json_type(detail, '$.label') IS NOT NULL
    OR json_type(detail, '$.note') IS NOT NULL OR json_type(detail, '$.reason') IS NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""",
    # Whether a span was reconstructed from the journal, in a clear column: attributes
    # may be encrypted (keel.codec), so SQL must not look inside them.
    15: """
ALTER TABLE spans ADD COLUMN reconstructed INTEGER NOT NULL DEFAULT 0;
UPDATE spans SET reconstructed = CASE WHEN typeof(attributes) = 'text' THEN
    coalesce(json_extract(attributes, '$."keel.execution.interrupted"'), 0) ELSE 0 END;
""",
    # Sessions (ctx.session: the run's session id, its key-value state) and long-term
    # memory (app.memory: facts, vectors, an FTS5 index, extraction statuses).
    16: """
ALTER TABLE runs ADD COLUMN session TEXT;
CREATE INDEX IF NOT EXISTS runs_by_session ON runs(session) WHERE session IS NOT NULL;
CREATE TABLE IF NOT EXISTS session_kv (
    session TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    writer TEXT,
    expires_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (session, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_kv_expiry ON session_kv(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS memories (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    context TEXT,
    metadata TEXT,
    digest TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB,
    valid_from REAL NOT NULL,
    valid_to REAL,
    superseded_by TEXT,
    source TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_by_namespace ON memories(namespace, seq);
CREATE INDEX IF NOT EXISTS memories_by_digest ON memories(namespace, digest);
CREATE TABLE IF NOT EXISTS memory_extracts (
    run_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    memory_id TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, item)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, context, content='memories', content_rowid='seq',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_fts_add AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text, context) VALUES (new.seq, new.text, new.context);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_drop AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, context)
    VALUES ('delete', old.seq, old.text, old.context);
END;
""",
    # Eval results (keel.evals, `keel eval`): suite runs and their cases.
    17: """
CREATE TABLE IF NOT EXISTS eval_results (
    id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_results_by_suite ON eval_results(suite, started_at);
CREATE TABLE IF NOT EXISTS eval_cases (
    eval_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    repeat_no INTEGER NOT NULL,
    run_id TEXT,
    passed INTEGER NOT NULL,
    scores TEXT NOT NULL,
    tags TEXT,
    PRIMARY KEY (eval_id, case_id, repeat_no)
) WITHOUT ROWID;
""",
    # Drift monitoring (keel.drift): monitors' settings and one value per run and monitor.
    18: """
CREATE TABLE IF NOT EXISTS drift_monitors (
    workflow TEXT NOT NULL,
    monitor TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (workflow, monitor)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift_values (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    monitor TEXT NOT NULL,
    run_id TEXT NOT NULL,
    at REAL NOT NULL,
    value REAL,
    label TEXT,
    UNIQUE (workflow, monitor, run_id)
);
CREATE INDEX IF NOT EXISTS drift_values_by_time ON drift_values(workflow, monitor, at, seq);
""",
}


def upgrade_script(version: int) -> str:
    """One transaction that brings a store at `version` (0: new) to `SCHEMA_VERSION`."""
    if version == 0:
        script = ddl(SQLiteDialect())
    else:
        script = "".join(MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
    # A new store gives the pages purges free back to the file system (only settable
    # before its first table; older stores switch with `keel runs purge --vacuum`).
    vacuum = "PRAGMA auto_vacuum=INCREMENTAL;" if version == 0 else ""
    return f"{vacuum}BEGIN IMMEDIATE;{script}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
