# Entry points for newcomers and CI.  The work is done by Python
# (python -m pyxen.lab ...); this file only orders the steps.
#
#   make bench   stock vs patched boot-storm benchmark in the nested lab
#   make test    unit tests and nested-lab tests
#
# Both install what they need: Debian packages (apt-get, as root or via sudo),
# a virtualenv in .venv with the project built into it (pip install '.[test,lab]').

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BENCH_ARGS ?=
PYTEST_ARGS ?=

.PHONY: deps venv install bench test

# Host packages first: "deps --install" needs only the standard library.
deps:
	$(PYTHON) -m pyxen.lab deps >/dev/null 2>&1 || $(SUDO) $(PYTHON) -m pyxen.lab deps --install

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q meson-python meson ninja cffi
	touch $@

venv: deps $(VENV)/.created

# Always rebuild the project into the venv, so what runs is this tree.  The
# venv's bin/ goes first on PATH: meson-python runs "meson" from PATH, and
# without build isolation that is the venv's.
install: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pip install -q --no-build-isolation '.[test,lab]'

bench: install
	$(VENV)/bin/python -P -m pyxen.lab bench $(BENCH_ARGS)

# pytest from the venv's script (not "python -m", which would put this tree on
# sys.path) so that the installed package, with its compiled parts, is tested.
test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)
