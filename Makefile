# kongtx: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
PY      = $(VENV)/bin/python
KONG_PREFIX ?= $(CURDIR)/kong-prefix
export KONG_PREFIX

.PHONY: install install-test run test lint typecheck clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip setuptools wheel

# A plain (non-editable) install, as the Dockerfile does: twistd then finds the
# `kong` plugin from any directory.
install: $(VENV)/bin/activate
	$(PIP) install -q .
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

install-test: install
	$(PIP) install -q '.[test]'

# One node in the foreground on the embedded store: proxy :8000/:8443, admin 127.0.0.1:8001.
run: install
	cd / && $(CURDIR)/$(VENV)/bin/twistd -n --pidfile= kong

test: install-test
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/ruff check kongtx tests
	$(VENV)/bin/ruff format --check kongtx tests
	$(VENV)/bin/mypy

typecheck: lint

clean:
	rm -rf $(VENV) build *.egg-info kong-prefix
