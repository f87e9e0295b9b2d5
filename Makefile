# Set-up and everyday commands. Every target creates what it needs in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser app-screenshot peer-test toy-models clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# A CPU machine must never pull the multi-GB CUDA build: install torch first when none is present.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test,spacy,app]"
	@# Only for the CLIP BPE merges file it ships; its import needs torchvision, which we never install.
	$(BIN)/python -m pip install -q --no-deps "open-clip-torch>=2.20"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hf-cir demo

test: $(STAMP) browser
	$(BIN)/ruff check src tests training pipelines benchmarks
	$(BIN)/python -m pytest -q

# The app's browser test drives Debian's Chromium (Playwright's own browser download needs the internet): installed
# here when missing and we are root with apt-get; otherwise that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "make browser: no Chromium and no way to install it (needs root and apt-get); the app's browser test will be skipped."

# Re-take docs/app.png: the browser test's screenshot of a finished query on the toy default.
app-screenshot: $(STAMP) browser
	HF_CIR_APP_SCREENSHOT=$(CURDIR)/docs/app.png $(BIN)/python -m pytest -q tests/app/test_app_browser.py

lint: $(STAMP)
	$(BIN)/ruff check src tests training pipelines benchmarks
	$(BIN)/ruff format --check src tests training pipelines benchmarks

# The peers' own common test suites (transformers' from the PyPI sdist of the installed version, diffusers' from a
# source checkout: `make peer-test DIFFUSERS_SRC=path/to/diffusers`) run on hf-cir's classes. Opt-in: not in `make test`.
peer-test: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[peer-test]"
	$(BIN)/python tests/peer/run_peer_tests.py $(if $(DIFFUSERS_SRC),--diffusers-src $(DIFFUSERS_SRC))

toy-models: $(STAMP)
	$(BIN)/python training/toy/build_toy_models.py

clean-venv:
	rm -rf $(VENV)
