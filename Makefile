# Run as: make reproduce [PROFILE=smoke|cpu|gpu]   |   make test
# Both create .venv on first use (about 3 min: torch 2.14.1 and friends, pinned in pyproject.toml).
PROFILE ?= cpu
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: reproduce test lint bench install clean-runs notebooks report verify

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	# register the venv's interpreter as the 'python3' kernel papermill uses
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (repro)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m repro run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(FORCE),--force)

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

# The report (notebook 07) from the existing results/$(PROFILE)/*.json: claims ledger, forest plot, paper pages,
# provenance, and figures/$(PROFILE)/report/index.html (HTML of the executed notebooks, then of 07 itself). No training.
report: $(STAMP)
	$(PY) -m repro run --profile $(PROFILE) --only 07 --force
	$(PY) -m repro.report_book export --profile $(PROFILE)

# Rerun a profile (or ONLY="04 05") into a scratch copy of the repo and compare with the committed results: each
# number inside/outside its committed CI, every verdict that changed. Committed results and figures are not touched.
verify: $(STAMP)
	$(PY) -m repro.verify --profile $(PROFILE) $(if $(ONLY),--only $(ONLY))
