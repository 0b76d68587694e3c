# Skyloop: `make demo` and `make test` work on a fresh clone (they build .venv first).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench lint install system-deps worker web clean-demo

install: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-nodeps.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

system-deps:
	bash scripts/system-deps.sh

demo: install
	bash scripts/demo.sh

test: install system-deps
	SKYLOOP_VAR_DIR=$(CURDIR)/var/test SKYLOOP_GPU_QUEUE=gpu-test $(PY) -m pytest $(PYTEST_ARGS)

bench: install
	rm -rf var/bench
	SKYLOOP_VAR_DIR=$(CURDIR)/var/bench SKYLOOP_GPU_QUEUE=gpu-bench $(PY) bench/run.py

lint: install
	$(VENV)/bin/ruff check .

worker: install
	$(PY) -m celery -A labeler worker -Q gpu,default --pool solo --loglevel INFO --without-mingle --without-gossip

clean-demo:
	rm -rf var/skyloop.sqlite3* var/media var/models var/celery
