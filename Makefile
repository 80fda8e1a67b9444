# Run as: make reproduce [PROFILE=smoke|cpu|gpu]   |   make test
# Both create .venv on first use (about 3 min: torch 2.14.1 and friends, pinned in pyproject.toml).
PROFILE ?= cpu
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: reproduce test lint bench install clean-runs notebooks report verify lab test-browser dryrun

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

# JupyterLab on the notebooks folder; its 'python3' kernel is the venv's (registered by the install step above)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# The widgets in a real browser: Debian's chromium (installed here if missing; needs root or sudo rights), driven by
# playwright from the dev extras. Writes runs/browser/<notebook>.png and runs/browser/timings.json.
CHROMIUM ?= /usr/bin/chromium
test-browser: $(STAMP)
	test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	REPRO_BROWSER=1 CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -m browser tests/browser
	cat runs/browser/timings.json

clean-runs:
	rm -rf runs/$(PROFILE)

# The report (notebook 07) from the existing results/$(PROFILE)/*.json: claims ledger, forest plot, paper pages,
# provenance, and figures/$(PROFILE)/report/index.html (HTML of the executed notebooks, then of 07 itself). No training.
report: $(STAMP)
	$(PY) -m repro run --profile $(PROFILE) --only 07 --force
	$(PY) -m repro.report_book export --profile $(PROFILE)

# Rerun a profile (or ONLY="04 05") into a scratch copy of the repo and compare with the committed results: each
# number inside/outside its committed CI, every verdict that changed. Committed results and figures are not touched
# (RECORD=1 adds one file).
# ISA=committed (or avx2, avx512, default): the rerun's torch CPU kernels forced to that vector ISA
# (ATEN_CPU_CAPABILITY, MKL and oneDNN capped to match): "another CPU" on this one; reports which verdicts held.
# ISA=aten-default: ATen's portable kernels only, the cheap perturbation of this CPU (a verdict that flips is not a result).
# THREADS=committed (or a number): the rerun's torch threads (the bits can depend on the count).
# RECORD=1: write results/$(PROFILE)/verify_<isa>.json; stage 07's ledger shows which verdicts held (commit it).
verify: $(STAMP)
	$(PY) -m repro.verify --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(ISA),--isa $(ISA)) $(if $(THREADS),--threads $(THREADS)) $(if $(RECORD),--record)
