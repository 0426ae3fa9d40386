# The two commands the README promises: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: system-deps install demo test lint

# Debian packages (Dovecot for the private IMAP server, python3-venv); needs root or sudo.
system-deps:
	bash .ci/system-packages

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: system-deps $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

demo: install
	$(BIN)/python service.py demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check intake tests service.py bench
	$(BIN)/ruff format --check intake tests service.py bench
	$(BIN)/mypy intake service.py
