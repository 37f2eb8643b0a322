# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-service test lint types unit bench clean .venv

# (Re)create the virtual environment when it is missing or the build inputs changed (the install
# also compiles the optional native fast paths, src/sgxlaunch/cpu/_paging.c and _cmac.c, in place).
$(STAMP): pyproject.toml setup.py src/sgxlaunch/cpu/_paging.c src/sgxlaunch/cpu/_cmac.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

.venv: $(STAMP)

demo: .venv
	$(BIN)/python demo/demo.py

# The same story through sgxlaunchd, which the demo starts and stops itself (docs/service.md).
demo-service: .venv
	$(BIN)/python demo/demo.py --service

lint: .venv
	$(BIN)/ruff check src tests bench demo scripts setup.py
	$(BIN)/ruff format --check src tests bench demo scripts setup.py

# src/, tests/ and bench/ (the files of pyproject.toml's [tool.mypy]).
types: .venv
	$(BIN)/mypy --strict

# The whole suite, then the processor and driver suites again on the pure-Python paging leaves
# (the native fast path is optional; both must behave the same). Both runs spread the test files
# over one pytest-xdist worker per core (a whole file to one worker, so a module's fixtures are
# made once), in collection order: tests/conftest.py puts the files marked slow first. Tests
# marked `alone` (timed against a bound) run afterwards in one process with nothing beside them.
# A plain `pytest FILE` while iterating stays in one process.
PYTEST_PARALLEL := -n auto --dist loadfile --no-loadscope-reorder

unit: .venv
	$(BIN)/pytest $(PYTEST_PARALLEL) -m 'not alone'
	$(BIN)/pytest -m alone
	SGXLAUNCH_PURE_PYTHON=1 $(BIN)/pytest $(PYTEST_PARALLEL) tests/cpu tests/driver

test: .venv lint types unit

bench: .venv
	for b in measure sdk cpu driver sgx2 policy launch kill9 attest service pcl; do $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
	rm -f src/sgxlaunch/cpu/*.so
