# npnorm - the two commands a user needs are `make book` and `make test`; a learner adds
# `make check TASK=2.3`. Every target creates .venv from requirements.txt on first use and refreshes it
# when the requirements change (or when the clone has been moved: see below).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.npnorm-installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export MPLBACKEND ?= Agg
# small matrices on few cores: one BLAS thread is faster (see tests/conftest.py)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: help test check bench book book-learner lab venv lock clean clean-venv

# A virtual environment remembers where it was made: the .pth file that makes this project importable
# holds its absolute path, and the scripts' first lines name .venv/bin/python by absolute path. After
# the clone is moved, the old environment would silently import the OLD clone (and check its
# exercises), so it is rebuilt for the new place.
VENV_PTH = $(firstword $(wildcard $(VENV)/lib/python*/site-packages/npnorm-project.pth))
ifneq ($(wildcard $(STAMP)),)
ifneq ($(VENV_PTH),)
ifneq ($(shell cat $(VENV_PTH)),$(CURDIR))
$(info .venv was made for $(shell cat $(VENV_PTH)); this clone is $(CURDIR): rebuilding .venv)
$(shell rm -rf $(VENV))
endif
endif
endif

help:
	@echo "make test          run the whole test suite (creates .venv if needed)"
	@echo "make check         check your exercises: make check TASK=2.3 (a task), TASK=2 (a chapter)"
	@echo "                   or no TASK (everything); in a notebook: %run -m npnorm.check 2.3"
	@echo "make bench         benchmark against PyTorch CPU in .venv-bench (ARGS='--quick' etc.)"
	@echo "make book          build the book to HTML and print where to open it"
	@echo "make book-learner  build the learner edition (no solutions)"
	@echo "make lab           JupyterLab on the project: chapters (book/) and exercise files"
	@echo "make clean         remove build outputs (keeps .venv)"

venv: $(STAMP)

# Rebuild the environment whenever requirements.txt or constraints.txt is newer than the stamp.
$(STAMP): requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# make the project importable from the venv (book notebooks run from book/)
	$(PY) -c "import site, sys; open(site.getsitepackages()[0] + '/npnorm-project.pth', 'w').write(sys.argv[1] + '\\n')" "$(CURDIR)"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# make check TASK=2.3 [CHECK_ARGS=--show-output]: the verdict per task. A failed task is reported by
# the check itself, so make does not add its own error line for it (exit status 1); usage errors (2)
# and Ctrl-C still fail the target.
check: $(STAMP)
	@$(PY) -m npnorm.check $(TASK) $(CHECK_ARGS) || test $$? -eq 1

# The benchmark runs in its own environment, .venv-bench: npnorm's numerics plus PyTorch CPU (the
# comparison column). PyTorch never enters .venv, the project's environment.
BENCH_VENV  ?= .venv-bench
BENCH_PY    := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.npnorm-bench-installed

$(BENCH_STAMP): tools/requirements-bench.txt constraints.txt
	@test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -r tools/requirements-bench.txt
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@mkdir -p bench-results
	PYTHONPATH=$(CURDIR) $(BENCH_PY) -m npnorm.bench --json bench-results/bench.json --plot bench-results/bench.png $(ARGS)

book: $(STAMP)
	$(PY) -m npnorm.tools.build_book

book-learner: $(STAMP)
	$(PY) -m npnorm.tools.build_book --learner

lab: $(STAMP)
	$(PY) -m npnorm.tools.lab

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sed '1i # Full pin set (pip freeze of a working .venv, Python 3.11). Used as a constraints file by requirements.txt.\n# Regenerate with: make lock' > constraints.txt

clean:
	rm -rf book/_build .pytest_cache .hypothesis .numba_cache .jupyter-lab-settings notebooks

clean-venv:
	rm -rf $(VENV) $(BENCH_VENV)
