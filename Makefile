# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit bench clean .venv

# (Re)create the virtual environment when it is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

.venv: $(STAMP)

demo: .venv
	$(BIN)/python demo/demo.py

lint: .venv
	$(BIN)/ruff check src tests bench demo
	$(BIN)/ruff format --check src tests bench demo

types: .venv
	$(BIN)/mypy --strict src

unit: .venv
	$(BIN)/pytest

test: .venv lint types unit

bench: .venv
	for b in measure cpu driver policy launch; do $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
