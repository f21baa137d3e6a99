# Two commands do everything on a fresh machine: `make train` and `make test`.
# Both create .venv and install the project first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on machines without a GPU. Set TORCH= (empty) to keep a torch you installed yourself.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The versions CI tests: a fresh machine resolves the same packages today and next month.
CONSTRAINTS := requirements/test-constraints.txt
LATEST_VENV ?= .venv-latest

.PHONY: install train train-seeds eval test test-latest lock lint bench paper

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || [ -z "$(TORCH)" ] || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/xmod-train $(ARGS)

# Seeds as a sweep axis: the default experiment (with ARGS) once per seed, then xmod-report on that sweep: the
# per-run table and the mean ± sd (n, degenerate runs counted) per evaluation set, zs_avg and avg (README "Seeds").
# The report is printed even when a seed's run failed; the exit status is then xmod-train's.
SEEDS ?= 0,1,2,3,4,42
train-seeds: $(STAMP)
	@dir="$${XMOD_ROOT:-.}/outputs/seeds/multiruns/$$(date +%Y-%m-%d_%H-%M-%S)"; \
	echo "xmod-train -m seed=$(SEEDS) hydra.sweep.dir=$$dir $(ARGS)"; \
	$(BIN)/xmod-train -m seed=$(SEEDS) hydra.sweep.dir=$$dir $(ARGS); status=$$?; \
	$(BIN)/xmod-report $$dir && exit $$status

eval: $(STAMP)
	$(BIN)/xmod-eval $(ARGS)

# The X-MOD paper in miniature (xmod_lab/paper.py): curse of multilinguality, zero-shot, post-hoc languages
# -> outputs/paper/{summary.json,README.md,*.png} and docs/paper.md (generated from summary.json).
paper: $(STAMP)
	$(BIN)/python -m xmod_lab.paper $(ARGS)

# The suite on TEST_WORKERS processes (pytest-xdist), handed out one test file at a time (tests/conftest.py:
# slowest files first). TEST_WORKERS=0: one process, no workers.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: $(STAMP)
	$(BIN)/ruff check xmod_lab tests benchmarks scripts
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) $(ARGS)

# The suite against the newest releases the ranges in pyproject.toml allow, in its own venv, so that
# drift is seen before it reaches main. Green here: `make lock` records those versions for CI.
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -c "import torch" 2>/dev/null || [ -z "$(TORCH)" ] || $(LATEST_VENV)/bin/pip install -q "$(TORCH)"
	$(LATEST_VENV)/bin/pip install -q -U --upgrade-strategy eager -e ".[dev]"
	$(LATEST_VENV)/bin/python -m pytest -q $(PYTEST_WORKERS) $(ARGS)

lock:
	test -x $(LATEST_VENV)/bin/python || { echo "run make test-latest first"; exit 1; }
	{ sed -n '1,2p' $(CONSTRAINTS); $(LATEST_VENV)/bin/pip freeze --exclude-editable | grep -viE '^(torch|xmod-lab|nvidia-|triton)[=@ ]'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# The model benchmark (ARGS), then the whole default job: xmod-train vs a transformers Trainer script (E2E_ARGS).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py $(ARGS)
	$(BIN)/python benchmarks/bench_e2e.py $(E2E_ARGS)
