# Set-up and everyday commands. Every target creates what it needs in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint toy-models clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# A CPU machine must never pull the multi-GB CUDA build: install torch first when none is present.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test,spacy]"
	@# Only for the CLIP BPE merges file it ships; its import needs torchvision, which we never install.
	$(BIN)/python -m pip install -q --no-deps "open-clip-torch>=2.20"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hf-cir demo

test: $(STAMP)
	$(BIN)/ruff check src tests training pipelines benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests training pipelines benchmarks
	$(BIN)/ruff format --check src tests training pipelines benchmarks

toy-models: $(STAMP)
	$(BIN)/python -m hf_cir.toy.build_models

clean-venv:
	rm -rf $(VENV)
