# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: install demo lint format test test-fast lock clean

# Install everything into .venv, pinned by constraints.txt (torch 2.14.1 comes from local disk), with uv (a fast
# installer from the package registry) given pip's package sources (scripts/uv_env.py); with pip where uv is missing.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt uv; then \
	    eval "$$($(BIN)/python scripts/uv_env.py)" && \
	    $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[dev]'; \
	else \
	    echo "uv could not be installed: installing with pip, which takes longer" >&2; \
	    $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'; \
	fi
	touch $(STAMP)

install: $(STAMP)

# Run the main job on the built-in synthetic world.
demo: install
	$(BIN)/gadms pipeline

# Lint, format check and type check (run by `make test`, so CI enforces them).
lint: install
	$(BIN)/ruff check gadms flows tests
	$(BIN)/ruff format --check gadms flows tests
	$(BIN)/mypy

# Rewrite the code in the house format (ruff, line length 120).
format: install
	$(BIN)/ruff format gadms flows tests
	$(BIN)/ruff check --fix gadms flows tests

# Lint, then run the whole test suite (what CI runs).
test: lint
	$(BIN)/python -m pytest

# Skip the tests marked slow.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# Write params.yaml from the schema in gadms/config/ (the defaults and their comments); run after changing a
# default or a field's description there (tests/test_config.py fails while the two differ).
.PHONY: params
params: install
	$(BIN)/python -m gadms.config params.yaml

# Re-lock the working set after changing dependencies in pyproject.toml.
lock: install
	{ echo "# Locked working set for a fresh install (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e' | grep -vi '^gadms'; } > constraints.txt

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
