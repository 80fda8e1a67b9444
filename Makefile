# Run as: make reproduce [PROFILE=smoke|cpu|gpu]   |   make test
# Both create .venv on first use (about 3 min: torch 2.14.1 and friends, pinned in pyproject.toml).
PROFILE ?= cpu
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: reproduce test lint bench install clean-runs lab test-browser

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
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

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
