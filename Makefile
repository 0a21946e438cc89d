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

# What setup.cfg asks for (options.install_requires, or an extra), one requirement a line.
requirements = $(PY) -c 'import configparser; c = configparser.ConfigParser(); c.read("setup.cfg"); print(c["$(1)"]["$(2)"])'

# mypyc compiles the hot path after type-checking it with [tool.mypy]: the mypy it was
# tested with (a newer one may compile differently), the plugin and the stubs.
BUILD_REQUIREMENTS = mypy==2.4.1 mypy-zope==1.0.17 types-pyOpenSSL types-PyYAML 'setuptools>=68' wheel

# A plain (non-editable) install, as the Dockerfile does: twistd then finds the
# `kong` plugin from any directory.  The runtime dependencies and mypyc first, then
# the package built against them (--no-build-isolation) with its hot path compiled
# (setup.py; KONGTX_PURE=1 make install: pure Python).
install: $(VENV)/bin/activate
	$(call requirements,options,install_requires) > $(VENV)/kongtx-requirements.txt
	$(PIP) install -q -r $(VENV)/kongtx-requirements.txt $(BUILD_REQUIREMENTS)
	$(PIP) install -q --no-build-isolation --no-deps --force-reinstall .
	cd / && $(abspath $(PY)) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	cd / && $(abspath $(PY)) -c "from kongtx.build_info import describe; print(describe())"

# The test tools, without rebuilding the package.
install-test: install
	$(call requirements,options.extras_require,test) > $(VENV)/kongtx-test-requirements.txt
	$(PIP) install -q -r $(VENV)/kongtx-test-requirements.txt

# One node in the foreground on the embedded store: proxy :8000/:8443, admin 127.0.0.1:8001.
run: install
	cd / && $(abspath $(VENV))/bin/twistd -n --pidfile= kong

test: install-test
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/ruff check kongtx tests
	$(VENV)/bin/ruff format --check kongtx tests
	$(VENV)/bin/mypy

typecheck: lint

clean:
	rm -rf $(VENV) build *.egg-info kong-prefix
