# Two commands on a fresh machine with Python >= 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:12])')

.PHONY: install demo test bench ui clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) and installing unitledger with its pinned stack (a minute or two; pip shows each package)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/unitledger demo

test: install
	$(BIN)/python -m pytest

# Full-scale benchmark (5M requests, about 12M FOCUS rows): see docs/performance.md.
bench: install
	$(BIN)/unitledger bench --requests 5000000 --format parquet

# Dagster UI, daemon (schedule, sensor, run queue) and local SQLite storage from ./dagster.yaml.
ui: install
	DAGSTER_HOME=$(CURDIR) $(BIN)/dagster dev --host 127.0.0.1 --port 3000

clean:
	rm -rf data/landing data/warehouse data/warehouse.duckdb .dagster
