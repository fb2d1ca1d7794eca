#!/usr/bin/env bash
# The test suite, as `make test` runs it: the whole suite on SQLite and, at the same time
# in a second process, the store-facing tests again on Postgres (tests/postgres_suite.txt
# says which, and why not the rest). Most tests wait on workers, servers and the browser
# rather than compute, so the two passes share the cores well. The Postgres pass's output
# is printed after the first pass's; the exit status is non-zero if either failed.
set -uo pipefail
PY=${PY:-.venv/bin/python}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
mapfile -t pg_tests < <(grep '^tests/' tests/postgres_suite.txt)
KEEL_TEST_STORE=postgres "$PY" -m pytest -q -p no:cacheprovider "${pg_tests[@]}" "$@" >"$log" 2>&1 &
pg=$!
echo "== the whole suite on SQLite (the Postgres pass runs alongside)"
"$PY" -m pytest -q -p no:cacheprovider "$@"
sqlite=$?
wait "$pg"
postgres=$?
echo "== the store-facing tests on Postgres (KEEL_TEST_STORE=postgres)"
cat "$log"
if ((sqlite || postgres)); then
    echo "tests failed: SQLite pass exit $sqlite, Postgres pass exit $postgres" >&2
    exit 1
fi
