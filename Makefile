# vlbridge — the two commands a new user runs: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
DEMO    ?= runs/demo
DATA    ?= data/shapes
STAMP   := $(VENV)/.installed
# Training processes (torchrun, the cores shared out as threads); the global batch stays 16.
NPROC   ?= 2

# lmms-eval's side environment (`make test-lmms`): the harness and its tests, kept out of $(VENV).
LMMS_VENV  ?= .venv-lmms
LMMS_BIN   := $(LMMS_VENV)/bin
LMMS_EVAL  := lmms-eval==0.7.3
LMMS_STAMP := $(LMMS_VENV)/.installed

.PHONY: install demo test test-fast install-lmms test-lmms bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned (an unpinned torch pulls a multi-GB CUDA build), then the project.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# ShapesWorld -> pretrain the tiny vision encoder (no CLIP to download; kept when already there) -> train the
# MLLM data-parallel (resumes if interrupted) -> evaluate on the test split -> a figure of answers.
demo: $(STAMP)
	$(BIN)/vlbridge data shapes --out $(DATA) --n 3000 --seed 0
	test -f $(DEMO)/vision/model.safetensors || \
		$(BIN)/vlbridge pretrain-vision --preset tiny-cpu --annotations $(DATA)/scenes.json --out $(DEMO)/vision
	OMP_NUM_THREADS=$$(( $$(nproc) / $(NPROC) > 0 ? $$(nproc) / $(NPROC) : 1 )) $(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m vlbridge train --preset tiny-cpu \
		--batch-size $$((16 / $(NPROC))) --vision $(DEMO)/vision --train.train-vision false \
		--data $(DATA) --out $(DEMO) --resume
	$(BIN)/vlbridge eval --model $(DEMO)/final --data $(DATA)/test.json --out $(DEMO)/eval
	$(BIN)/vlbridge viz answers --model $(DEMO)/final --data $(DATA)/test.json --out $(DEMO)/answers.png
	@echo "demo done: accuracy table in $(DEMO)/eval/metrics.md, figure in $(DEMO)/answers.png"

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# the inner loop: everything but the end-to-end tests marked slow
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"
# The recipe that installs lmms-eval beside the CPU torch: torch first, then every later install constrained
# to it (lmms-eval would otherwise pull a CUDA torch through torchvision) and to filelock<4 (lmms-eval
# imports filelock._api); torchvision is removed (its wheel is built against another torch and breaks
# imports); vlbridge goes in editable, its torch already satisfied.
$(LMMS_STAMP): pyproject.toml
	$(PY) -m venv $(LMMS_VENV)
	$(LMMS_BIN)/pip install --quiet --upgrade pip
	$(LMMS_BIN)/pip install --quiet $(TORCH)
	printf '%s\n' '$(TORCH)' 'filelock<4' > $(LMMS_VENV)/constraints.txt
	$(LMMS_BIN)/pip install --quiet -c $(LMMS_VENV)/constraints.txt $(LMMS_EVAL)
	$(LMMS_BIN)/pip uninstall --quiet --yes torchvision
	$(LMMS_BIN)/pip install --quiet -c $(LMMS_VENV)/constraints.txt -e ".[dev]"
	touch $(LMMS_STAMP)

install-lmms: $(LMMS_STAMP)

# The plugin against lmms-eval's own classes, and run by lmms-eval's evaluator on the local tasks of
# tests/lmms/ (a model trained in the test; no network).
test-lmms: $(LMMS_STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(LMMS_BIN)/python -m pytest tests/integrations/test_lmms_eval_plugin.py tests/lmms

bench: $(STAMP)
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/data_parallel.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) $(LMMS_VENV) runs data
