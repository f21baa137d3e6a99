# Two commands do everything on a fresh machine: `make train` and `make test`.
# Both create .venv and install the project first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on machines without a GPU. Set TORCH= (empty) to keep a torch you installed yourself.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install train eval test lint bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || [ -z "$(TORCH)" ] || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/xmod-train $(ARGS)

eval: $(STAMP)
	$(BIN)/xmod-eval $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check xmod_lab tests benchmarks scripts
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py $(ARGS)
