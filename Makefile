# AOB developer entry points. `make up` runs the whole stack with embedded PostgreSQL and Redis
# (or the servers named by DATABASE_URL / REDIS_URL); `make test` runs the suite the same way.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv up services test test-system test-faults lint bench clean chromium

# The stamp makes the install run again only when requirements.txt or pyproject.toml changes, or
# when the install itself changes (a new stamp name: a venv made before it is installed again once).
INSTALLED := $(VENV)/.installed-bytecode
venv: $(INSTALLED)

# The pinned requirements go in with uv (pinned here), which installs them in about 8 s where pip took
# 42 s of every fresh clone's `make test` (same versions: it reads the same pins); the project itself
# is installed editable (for the `aob` console script), offline: no build isolation. The packages are
# compiled to bytecode as they go in, as pip does and uv does not unless asked: with
# PYTHONDONTWRITEBYTECODE set (as on this machine) every process of the suite compiled Django, Celery
# and the rest from source at its start (importing the app took 3.0-3.6 s here, 0.9-1.0 s compiled;
# 6.4-8.1 s on a slower day), and `make test` took 17-23 minutes where it takes 7-10 compiled.
# The output goes to .aob/install.log (shown only when it fails), so `make up` ends on its banner.
UV_VERSION := 0.13.8
$(INSTALLED): requirements.txt pyproject.toml
	@mkdir -p .aob
	@echo "[aob] installing the pinned requirements into $(VENV) (output in .aob/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@( $(BIN)/python -m pip install --disable-pip-version-check -q uv==$(UV_VERSION) \
	  && $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.txt \
	  && $(BIN)/uv pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e . ) \
	  >.aob/install.log 2>&1 || (tail -40 .aob/install.log; exit 1)
	@touch $@

up: venv
	@$(BIN)/python -m aob.launcher up $(UP_ARGS)

services: venv
	$(BIN)/python -m aob.launcher services

# `make test` leaves out the tests of the whole system from outside (marker `system`: `make up`'s
# launcher brought up and stopped, schemathesis against a live server, a stack on RabbitMQ, web
# processes flooded and starved of reads), about two minutes of its 15; `make test-system` runs
# them, and .ci/run runs both.
# It runs the suite in TEST_PROCESSES processes (pytest-xdist, a file's tests together), each a
# session with its own embedded PostgreSQL and Redis, Celery workers and beat: one process kept one
# of this machine's two cores busy. Files go out in collection order, the longest first
# (tests/conftest.py LONGEST_FILES), not xdist's most-tests-first. TEST_PROCESSES=0 runs it in one.
TEST_PROCESSES ?= 2
test: venv chromium
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder -m "not system" $(PYTEST_ARGS)

test-system: venv
	$(BIN)/pytest tests/test_quickstart.py tests/security/test_contract_live.py tests/broker/test_rabbitmq.py \
	  tests/web/test_socket_memory.py tests/web/test_socket_bounds.py tests/web/test_fair_threads.py tests/web/test_idle_sockets.py -m system $(PYTEST_ARGS)

# The fault suite (tests/faults, docs/OPERATIONS.md): every fault in FAULT_TRIALS seeded trials (20 unless
# told) and FAULT_CONTROL_TRIALS negative controls; the figures go to .aob/faults.json and a table.
# `make test` runs its lean subset (one trial of the lighter faults).
FAULT_TRIALS ?= 20
FAULT_CONTROL_TRIALS ?= 3
test-faults: venv
	FAULT_TRIALS=$(FAULT_TRIALS) FAULT_CONTROL_TRIALS=$(FAULT_CONTROL_TRIALS) $(BIN)/pytest tests/faults \
	  tests/engine/test_lease.py tests/engine/test_output_stored.py tests/engine/test_durability.py \
	  tests/engine/test_cancel_stops_work.py tests/approvals/test_park_callback_lost.py tests/subflows/test_subflow_budget.py \
	  tests/engine/test_sweep_poison.py tests/engine/test_coordinator_shares.py tests/triggers/test_schedules.py \
	  tests/engine/test_fair_shares.py tests/test_migrations.py tests/engine/test_unserved.py tests/engine/test_unclaimed.py \
	  -m "fault or faults_full" $(PYTEST_ARGS)

# The browser test drives Debian's Chromium (never a browser download); install it when missing.
chromium:
	@test -x /usr/bin/chromium || DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
	|| (DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench: venv
	@if [ -f bench/__main__.py ]; then $(BIN)/python -m bench $(BENCH_ARGS); \
	else echo "make bench: the bench package is not there yet"; fi

clean:
	rm -rf .aob
