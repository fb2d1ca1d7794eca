"""The store's schema, written once for every dialect: what a new store is made of.

`ddl(dialect)` is the current version (`VERSION`) whole, with the dialect's column
types (`{real}`, `{bigint}`, `{blob}`, `{payload}`: a column that may hold a sealed
value, `{serial_pk}`) and table suffix (`{without_rowid}`). Tables list their columns in
the order SQLite stores made by the migrations in `keel.store._sqlite_schema` have them,
so a new store and an upgraded one are the same (tests/store/test_sql_schema.py).

Example:
    >>> from keel.store.sql.sqlite_dialect import SQLiteDialect
    >>> "CREATE TABLE IF NOT EXISTS runs" in ddl(SQLiteDialect())
    True
"""

from __future__ import annotations

from keel.store.sql.dialect import Dialect

VERSION = 18

# Version 16: the session a run belongs to and its key-value state (ctx.session), and
# long-term memory (app.memory): facts with validity intervals, their vectors, a
# full-text index (`Dialect.memory_search`), and the status of each extracted item.
_V16 = """
CREATE INDEX IF NOT EXISTS runs_by_session ON runs(session) WHERE session IS NOT NULL;
CREATE TABLE IF NOT EXISTS session_kv (
    session TEXT NOT NULL,
    key TEXT NOT NULL,
    value {payload} NOT NULL,
    version {bigint} NOT NULL,
    writer TEXT,
    expires_at {real},
    updated_at {real} NOT NULL,
    PRIMARY KEY (session, key)
){without_rowid};
CREATE INDEX IF NOT EXISTS session_kv_expiry ON session_kv(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS memories (
    seq {serial_pk},
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    context TEXT,
    metadata TEXT,
    digest TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector {blob},
    valid_from {real} NOT NULL,
    valid_to {real},
    superseded_by TEXT,
    source TEXT,
    created_at {real} NOT NULL
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
    updated_at {real} NOT NULL,
    PRIMARY KEY (run_id, item)
){without_rowid};
"""

# Version 17: eval results (keel.evals, `keel eval`): one row per suite run, one per case
# and repeat; scores and summaries as JSON text (keel/store/sql/evals.py).
_V17 = """
CREATE TABLE IF NOT EXISTS eval_results (
    id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    started_at {real} NOT NULL,
    ended_at {real} NOT NULL,
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
){without_rowid};
"""

# Version 18: drift monitoring (keel.drift): each monitor's settings as JSON, and one
# value per run and monitor, read back in windows by insertion order or time
# (keel/store/sql/drift.py).
_V18 = """
CREATE TABLE IF NOT EXISTS drift_monitors (
    workflow TEXT NOT NULL,
    monitor TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_at {real} NOT NULL,
    PRIMARY KEY (workflow, monitor)
){without_rowid};
CREATE TABLE IF NOT EXISTS drift_values (
    seq {serial_pk},
    workflow TEXT NOT NULL,
    monitor TEXT NOT NULL,
    run_id TEXT NOT NULL,
    at {real} NOT NULL,
    value {real},
    label TEXT,
    UNIQUE (workflow, monitor, run_id)
);
CREATE INDEX IF NOT EXISTS drift_values_by_time ON drift_values(workflow, monitor, at, seq);
"""

_TABLES = (
    """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    input {payload} NOT NULL,
    result {payload},
    error {payload},
    state {payload},
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    ended_at {real},
    wake_at {real},
    waiting_on TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires {real},
    tenant TEXT,
    session TEXT
);
CREATE INDEX IF NOT EXISTS runs_ready ON runs(status, wake_at);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE INDEX IF NOT EXISTS runs_ended ON runs(ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    scope TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    digest {payload} NOT NULL,
    status TEXT NOT NULL,
    output {payload},
    error {payload},
    attempts INTEGER NOT NULL,
    started_at {real} NOT NULL,
    ended_at {real},
    wake_at {real},
    state_delta {payload},
    blob TEXT,
    fallback TEXT,
    input {payload},
    attempt_log {payload},
    PRIMARY KEY (run_id, key)
){without_rowid};
CREATE INDEX IF NOT EXISTS steps_by_blob ON steps(blob) WHERE blob IS NOT NULL;
CREATE TABLE IF NOT EXISTS signals (
    id {serial_pk},
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload {payload} NOT NULL,
    created_at {real} NOT NULL,
    consumed_by TEXT
);
CREATE INDEX IF NOT EXISTS signals_pending ON signals(run_id, name) WHERE consumed_by IS NULL;
CREATE INDEX IF NOT EXISTS signals_by_run ON signals(run_id);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data {blob} NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS escalations (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    packet {payload} NOT NULL,
    resolution {payload},
    created_at {real} NOT NULL,
    resolved_at {real},
    resolved_by TEXT
);
CREATE INDEX IF NOT EXISTS escalations_by_status ON escalations(status, created_at);
CREATE INDEX IF NOT EXISTS escalations_by_run ON escalations(run_id);
CREATE TABLE IF NOT EXISTS usage (
    run_id TEXT NOT NULL,
    step_key TEXT NOT NULL,
    workflow TEXT NOT NULL,
    tenant TEXT,
    model TEXT NOT NULL,
    input_tokens {bigint} NOT NULL,
    output_tokens {bigint} NOT NULL,
    cost_usd {real} NOT NULL,
    cache_hit INTEGER NOT NULL,
    created_at {real} NOT NULL,
    PRIMARY KEY (run_id, step_key)
){without_rowid};
CREATE INDEX IF NOT EXISTS usage_wf_cost ON usage(workflow, created_at, cost_usd);
CREATE INDEX IF NOT EXISTS usage_tenant_cost ON usage(tenant, created_at, cost_usd);
CREATE TABLE IF NOT EXISTS kv_cache (
    key TEXT PRIMARY KEY,
    value {payload} NOT NULL,
    expires_at {real}
){without_rowid};
CREATE INDEX IF NOT EXISTS kv_cache_expiry ON kv_cache(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns {bigint} NOT NULL,
    end_ns {bigint},
    status TEXT NOT NULL,
    status_message {payload},
    attributes {payload} NOT NULL,
    events {payload},
    links TEXT,
    reconstructed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id)
){without_rowid};
CREATE INDEX IF NOT EXISTS spans_by_end ON spans(end_ns);
CREATE INDEX IF NOT EXISTS spans_by_run ON spans(run_id);
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    step TEXT,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    request {payload} NOT NULL,
    decision {payload},
    deadline {real},
    created_at {real} NOT NULL,
    decided_at {real},
    decided_by TEXT
){without_rowid};
CREATE INDEX IF NOT EXISTS reviews_open ON reviews(kind, status, queue, created_at);
CREATE INDEX IF NOT EXISTS reviews_by_run ON reviews(run_id);
CREATE INDEX IF NOT EXISTS reviews_by_decision ON reviews(decided_at);
CREATE TABLE IF NOT EXISTS audit (
    id {serial_pk},
    at {real} NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail {payload}
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit(target, id);
CREATE TABLE IF NOT EXISTS sample_counts (
    workflow TEXT NOT NULL,
    day TEXT NOT NULL,
    seen INTEGER NOT NULL,
    PRIMARY KEY (workflow, day)
){without_rowid};
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_at {real} NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    csrf TEXT NOT NULL,
    client TEXT,
    created_at {real} NOT NULL,
    expires_at {real} NOT NULL
){without_rowid};
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions(expires_at);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions("user");
CREATE TABLE IF NOT EXISTS usage_daily (
    scope TEXT NOT NULL,
    day {real} NOT NULL,
    cost_usd {real} NOT NULL,
    PRIMARY KEY (scope, day)
){without_rowid};
CREATE TABLE IF NOT EXISTS workers (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    workflows TEXT NOT NULL,
    embedded INTEGER NOT NULL,
    started_at {real} NOT NULL,
    seen_at {real} NOT NULL,
    beat_every {real} NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS usage_rollup (
    day {real} NOT NULL,
    workflow TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    calls {bigint} NOT NULL,
    input_tokens {bigint} NOT NULL,
    output_tokens {bigint} NOT NULL,
    cost_usd {real} NOT NULL,
    cache_hits {bigint} NOT NULL,
    PRIMARY KEY (day, workflow, tenant, model)
){without_rowid};
"""
    + _V16
    + _V17
    + _V18
)


def ddl(dialect: Dialect) -> str:
    """Every table, index and guard of the current schema, as `dialect` spells them:
    statements separated by `;` (no transaction, no version record)."""
    tables = _TABLES.format_map(dialect.fragments())
    return dialect.version_table() + tables + dialect.append_only("audit") + dialect.memory_search()
