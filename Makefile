# Two commands a fresh machine needs: `make run` and `make test`. Each installs what it
# needs into .venv first (only again when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench install
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: install
	$(VENV)/bin/exauth status

test: install
	$(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done
