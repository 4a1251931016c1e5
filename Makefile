# vlbridge — the two commands a new user runs: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
DEMO    ?= runs/demo
DATA    ?= data/shapes
STAMP   := $(VENV)/.installed

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned (an unpinned torch pulls a multi-GB CUDA build), then the project.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m vlbridge.demo --data $(DATA) --out $(DEMO)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) runs data
