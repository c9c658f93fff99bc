# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: install demo test test-fast lock clean

# Install everything into .venv, pinned by constraints.txt (torch 2.14.1 comes from local disk).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Run the main job on the built-in synthetic world.
demo: install
	$(BIN)/gadms pipeline

# Run the whole test suite (what CI runs).
test: install
	$(BIN)/python -m pytest

# Skip the tests marked slow.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# Re-lock the working set after changing dependencies in pyproject.toml.
lock: install
	{ echo "# Locked working set for a fresh install (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e' | grep -vi '^gadms'; } > constraints.txt

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
