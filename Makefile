# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv when it is missing
# or older than pyproject.toml (the stamp file records the last successful install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lab clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[notebooks,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hdc reproduce --preset toy

# Notebooks run top to bottom in their fast mode (HDC_FAST=1), checked by nbval.
test: $(STAMP)
	HDC_FAST=1 $(BIN)/python -m pytest tests notebooks --nbval-lax

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

clean-venv:
	rm -rf $(VENV)
