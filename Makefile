# Run as: make reproduce [PROFILE=smoke|cpu|gpu]   |   make test
# Both create .venv on first use (about 3 min: torch 2.14.1 and friends, pinned in pyproject.toml).
PROFILE ?= cpu
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: reproduce test lint bench install clean-runs notebooks dryrun

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	# register the venv's interpreter as the 'python3' kernel papermill uses
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (repro)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m repro run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(FORCE),--force)

# The gpu profile's code path on CPU: tiny random Qwen2.5-VL / LLaVA-1.5 checkpoints + fixture data sets in the
# release layouts (runs/gpu-dryrun/), then every notebook with params/gpu-dryrun/. Its numbers mean nothing.
# Measured: 8.5 min wall, 400 s CPU, 1.2 GB RSS on 2 cores shared with other jobs (build 19 s, 01-04 1:00/1:45/3:40/1:55).
dryrun: $(STAMP)
	$(PY) -m repro.dryrun
	OMP_NUM_THREADS=2 $(PY) -m repro run --profile gpu-dryrun $(if $(ONLY),--only $(ONLY)) --force

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools notebooks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools notebooks

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# notebooks/NN_stem.py is the source; this rebuilds the stripped .ipynb papermill and JupyterLab open
notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

clean-runs:
	rm -rf runs/$(PROFILE)
