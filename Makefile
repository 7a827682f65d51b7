# The two commands a newcomer needs: `make run` and `make test` (see README).
PYTHON ?= $(shell scripts/find-python)
VENV   := .venv
STAMP  := $(VENV)/.installed
CONFIG ?= config/rtserver.toml

.PHONY: run demo screenshots test bench-peer bench-redis bench-python lock clean

# constraints.txt pins every package to the versions CI tested (`make lock` renews it).
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@echo "rtserver on http://127.0.0.1:8080 — WebSocket ws://127.0.0.1:8080/hub/ws"
	@echo "  token:   $(VENV)/bin/rtserver token --config $(CONFIG) --sub u1 --tenant t1"
	@echo "  publish: $(VENV)/bin/rtserver publish --config $(CONFIG) --event appointment.created --tenant t1 --rooms tenant:t1 --data '{\"appointmentId\":\"a1\"}'"
	@echo "  metrics: http://127.0.0.1:8080/metrics   health: /healthz /readyz"
	@echo "  pages (feed them: make demo URL=http://127.0.0.1:8080 ; or run make demo alone):"
	@$(VENV)/bin/rtserver pages --config $(CONFIG)
	$(VENV)/bin/rtserver serve --config $(CONFIG)

# The console and the wall dashboard with live traffic, on an embedded node (no Redis).
demo: $(STAMP)
	$(VENV)/bin/rtserver demo --config $(CONFIG) $(if $(URL),--url $(URL))

# docs/console.png and docs/wall.png, from the demo in headless Chromium.
screenshots: $(STAMP)
	scripts/install-test-deps
	$(VENV)/bin/python scripts/screenshots.py

test: $(STAMP)
	scripts/install-test-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Peer comparisons (see bench/RESULTS.md): need ../shared/peerbench.
bench-peer: $(STAMP)
	bench/peerbench/run.sh

bench-redis: $(STAMP)
	bench/peerbench/run.sh redis

# The interpreter the Docker image runs (CPython with PGO + LTO) in .bench-venv, for the
# benchmarks: RTSERVER_PYTHON=$PWD/.bench-venv/bin/python make bench-peer (20–30 min to build).
bench-python:
	scripts/build-bench-python

# Renew constraints.txt: the newest versions pyproject.toml allows, resolved in a fresh
# environment (then run `make test` and commit both).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q '.[test]'
	{ echo '# Every package at the version CI tested (make lock renews it; make run and make test install with it).'; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v -E '^rtserver( |==)'; } > constraints.txt
	rm -rf .lock-venv build

clean:
	rm -rf $(VENV) .pytest_cache
