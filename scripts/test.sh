#!/usr/bin/env bash
# The test suite, as `make test` runs it: the whole suite on SQLite, split over two
# processes, and at the same time in two more the store-facing tests again on Postgres
# (tests/postgres_suite.txt says which, and why not the rest). Most tests wait on
# workers, servers, models loading and the browser rather than compute (the passes kept
# 1.05 cores busy on average), so four processes share two cores well, and the wall time stays well under make test's
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
pg0=() pg1=()
for i in "${!pg_tests[@]}"; do
    if ((i % 2)); then pg1+=("${pg_tests[$i]}"); else pg0+=("${pg_tests[$i]}"); fi
done

# A background job of a non-interactive shell starts with SIGINT ignored, and so would
# every process a test starts (a Ctrl+C test's `keel run` never saw its Ctrl+C): each pass
# restores SIGINT's default before it runs, as a pass run in the foreground has it.
with_sigint='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])'

run() {  # run NAME [VAR=VALUE...] COMMAND...: in the background, logged
    local name=$1 log
    shift
    log=$(mktemp)
    logs+=("$log")
    names+=("$name")
    "$PY" -c "$with_sigint" env "$@" >"$log" 2>&1 &
    pids+=($!)
}
names=() pids=()
run "the store-facing tests on Postgres (KEEL_TEST_STORE=postgres), first half" \
    KEEL_TEST_STORE=postgres "$PY" -m pytest -q -p no:cacheprovider "${pg0[@]}"
run "the store-facing tests on Postgres (KEEL_TEST_STORE=postgres), second half" \
    KEEL_TEST_STORE=postgres "$PY" -m pytest -q -p no:cacheprovider "${pg1[@]}"
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
