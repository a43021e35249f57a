# The README's two commands: `make run` (train, promote, build, serve) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA := data/transactions.parquet

.PHONY: run test test-fast lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

$(DATA): | $(VENV)/.installed
	$(BIN)/python -m training simulate --out $(DATA)

run: $(VENV)/.installed $(DATA)
	$(BIN)/python -m training train --data $(DATA) --promote
	@if [ -f service.py ]; then \
		$(BIN)/bentoml build . && $(BIN)/bentoml serve .; \
	else \
		echo "Promoted $$($(BIN)/python -m model_store current)." \
			"service.py does not exist yet, so make run stops here."; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/black --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/black .

test: lint
	$(BIN)/pytest

test-fast: lint
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf runs data .pytest_cache
