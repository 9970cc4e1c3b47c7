# Two commands do all the set-up on a fresh machine:
#   make demo   fine-tune the bundled MiniLM on the bundled WNUT-16 tweets and print the report
#   make test   create/update the environment, install, run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_ARGS ?=

.PHONY: demo test bench bench-quick clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,demo]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/tuneforge train examples/wnut16-minilm.yaml --overwrite \
	  --set training.epochs=3 --set output_dir=runs/demo $(DEMO_ARGS)

# tests/test_serving.py drives Debian's chromium headless (never a browser Playwright downloads).
# Installed once when missing; needs root (CI and fresh machines run as root).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	else echo "note: the browser test needs Debian's chromium (sudo apt-get install chromium); it is skipped" >&2; fi

test: $(VENV)/.installed $(CHROMIUM)
	$(PY) -m pytest -q --durations=10

# Side-by-side benchmarks against the Trainer recipe and the pipeline; writes benchmarks/RESULTS.md.
$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,demo,bench]"
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py

bench-quick: $(VENV)/.bench
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
