#!/usr/bin/env bash
# The test suite, as `make test` runs it: the whole suite on SQLite, split over two
# processes, and at the same time in a third the store-facing tests again on Postgres
# (tests/postgres_suite.txt says which, and why not the rest). Most tests wait on
# workers, servers, models loading and the browser rather than compute, so three
# processes share two cores well, and the wall time stays well under make test's
# budget on a busy machine. Each pass's output is printed once it ends; the exit status
# is non-zero if any failed. Arguments (tests, -k, ...) run one SQLite pass with them.
set -uo pipefail
PY=${PY:-.venv/bin/python}
logs=()
trap 'rm -f "${logs[@]}"' EXIT

if (($#)); then
    "$PY" -m pytest -q -p no:cacheprovider "$@"
    exit $?
fi

# Test files dealt alternately to the two SQLite halves (sorted: similar files, such as
# the console's or the memory's, land in both halves).
mapfile -t files < <(find tests -name 'test_*.py' -not -path '*/fixtures/*' | sort)
half0=() half1=()
for i in "${!files[@]}"; do
    if ((i % 2)); then half1+=("${files[$i]}"); else half0+=("${files[$i]}"); fi
done
mapfile -t pg_tests < <(grep '^tests/' tests/postgres_suite.txt)

run() {  # run NAME ENV... -- PYTEST-ARGS...: in the background, logged
    local name=$1 log
    shift
    log=$(mktemp)
    logs+=("$log")
    names+=("$name")
    env "$@" >"$log" 2>&1 &
    pids+=($!)
}
names=() pids=()
run "the store-facing tests on Postgres (KEEL_TEST_STORE=postgres)" \
    KEEL_TEST_STORE=postgres "$PY" -m pytest -q -p no:cacheprovider "${pg_tests[@]}"
run "the whole suite on SQLite, first half" \
    "$PY" -m pytest -q -p no:cacheprovider "${half0[@]}"
run "the whole suite on SQLite, second half" \
    "$PY" -m pytest -q -p no:cacheprovider "${half1[@]}"

failed=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    status=$?
    echo "== ${names[$i]}"
    cat "${logs[$i]}"
    ((status)) && failed+=("${names[$i]} (exit $status)")
done
if ((${#failed[@]})); then
    printf 'tests failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
