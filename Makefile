# twistgate: the two commands a user needs are `make run` and `make test`.

# Python 3.10 is required: wasmer-python 1.1.0 has native wheels only up to CPython 3.10.
PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { command -v "$$p" || echo "$$p"; } && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/kong.yml
TRIAL_ARGS ?= tests

.PHONY: venv run test test-rebuilt filters bench soak clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "twistgate: Python 3.10 not found; install it (e.g. 'pyenv install 3.10') or set PYTHON=/path/to/python3.10" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/twistd -n twistgate --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m twisted.trial $(TRIAL_ARGS)

filters:
	$(MAKE) -C filters all

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build _trial_temp
