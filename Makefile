# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# pip shows what it collects and a progress bar: the first install takes minutes and must not look stuck.
# Make skips these recipes altogether while the stamp is newer than the requirements, so a warm start
# prints nothing from pip.
PIP_FLAGS := --disable-pip-version-check --progress-bar on

.PHONY: run test test-postgres services lint format bench venv dev-venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when the requirements change.
$(VENV)/.runtime-installed: requirements.txt | $(PY)
	@echo "[1/5] installing dependencies (first run: several minutes; then: database, agents, simulator, workers and web server)"
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(PY)
	@echo "installing runtime and test dependencies (first run: several minutes)"
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

venv: $(VENV)/.runtime-installed
dev-venv: $(VENV)/.dev-installed

# run_system prints steps 2-5 (database, agents, simulator, workers and web server) and keeps its children
# running: a child that dies is restarted; Ctrl-C stops every process it started.
run: venv
	@echo "[1/5] dependencies are installed (then: database, agents, simulator, workers and web server)"
	@$(PY) manage.py run_system

test: dev-venv
	$(PY) -m pytest $(PYTEST_ARGS)

# The scale-out pass: the marked subset on PostgreSQL with the Redis broker (`make services` starts both).
PG_TEST_URL ?= postgresql://aicp:aicp@127.0.0.1:5432/aicp
REDIS_TEST_URL ?= redis://127.0.0.1:6379/0
PG_MARKERS ?= postgres or money or training or cluster or races
test-postgres: dev-venv
	AICP_TEST_POSTGRES=1 DATABASE_URL=$(PG_TEST_URL) AICP_REDIS_URL=$(REDIS_TEST_URL) \
		$(PY) -m pytest -m "$(PG_MARKERS)" $(PYTEST_ARGS)

services:
	bash .ci/services.sh

lint: dev-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: dev-venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: dev-venv
	$(PY) bench/duke_learning_curve.py --train ../shared/datasets/reuters-r8.train.jsonl --test ../shared/datasets/reuters-r8.test.jsonl
	$(PY) bench/duke_learning_curve.py --train ../shared/datasets/rotten-tomatoes.train.jsonl --test ../shared/datasets/rotten-tomatoes.test.jsonl
	$(PY) bench/throughput.py --tasks 3000 --live-tasks 1000 --latency-ms 500 --concurrency 32,64
	$(PY) bench/api_load.py --clients 50 --seconds 30

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
