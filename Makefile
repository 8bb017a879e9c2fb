# The two commands: `make run` starts the app on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint format install install-dev messages screenshots bench

PIP := $(PY) -m pip install --quiet --disable-pip-version-check

# Quiet: `make run` should end with its own summary, not with pip's progress.
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the requirements into $(VENV)/ ..."
	@$(PIP) --upgrade pip
	@$(PIP) -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	@$(PIP) -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The web server's and the sink's ports: `make run PORT=8001 SINK_PORT=8026` runs a second
# checkout beside the first. SINK_AUTH=1 makes the sink offer a login (see the README).
PORT ?= 8000
SINK_PORT ?= 8025
export PORT SINK_PORT

run: install
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py ensure_admin
	@$(PY) manage.py rundev

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The suite runs on SQLite, then again on PostgreSQL (the browser and production-like smoke
# tests once is enough).
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/notifications
export TEST_POSTGRES_URL

test: install-dev lint
	$(PY) -m pytest $(PYTEST_ARGS)
	DATABASE_URL=$(TEST_POSTGRES_URL) $(PY) -m pytest -m "not browser and not production" $(PYTEST_ARGS)

# After changing user-facing strings: refresh the Chinese catalogue, translate, then compile.
messages: install-dev
	$(PY) manage.py makemessages -l zh_Hans --no-obsolete --add-location=file --ignore='tests/*' --ignore='bench/*' --ignore='scripts/*' --ignore='var/*' --ignore='docs/*'
	$(PY) manage.py compilemessages -l zh_Hans --ignore='.venv/*' --ignore='var/*'

# Rewrite the README's screenshots from the browser tests.
screenshots: install-dev
	UPDATE_SCREENSHOTS=1 $(PY) -m pytest -m browser $(PYTEST_ARGS)

# Benchmark (issues 7 and 12): needs PostgreSQL at 127.0.0.1:5432 (user postgres) and
# redis-server; installs django-post-office (the peer) in its own venv, var/bench-peers;
# writes docs/benchmarks.md.
bench: install-dev
	$(PY) -m bench $(BENCH_ARGS)
