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

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned (an unpinned torch pulls a multi-GB CUDA build), then the project.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# ShapesWorld -> pretrain the tiny vision encoder (no CLIP to download) -> train the MLLM data-parallel
# (resumes if interrupted) -> evaluate on the test split -> a figure of answers.
demo: $(STAMP)
	$(BIN)/vlbridge data shapes --out $(DATA) --n 3000 --seed 0
	$(BIN)/vlbridge pretrain-vision --preset tiny-cpu --annotations $(DATA)/scenes.json --out $(DEMO)/vision
	OMP_NUM_THREADS=$$(( $$(nproc) / $(NPROC) > 0 ? $$(nproc) / $(NPROC) : 1 )) $(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m vlbridge train --preset tiny-cpu \
		--batch-size $$((16 / $(NPROC))) --model.vision.name_or_path $(DEMO)/vision --train.train_vision false \
		--data $(DATA) --out $(DEMO) --resume
	$(BIN)/vlbridge eval --model $(DEMO)/final --data $(DATA)/test.json --out $(DEMO)/eval
	$(BIN)/vlbridge viz answers --model $(DEMO)/final --data $(DATA)/test.json --out $(DEMO)/answers.png
	@echo "demo done: accuracy table in $(DEMO)/eval/metrics.md, figure in $(DEMO)/answers.png"

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# the inner loop: everything but the end-to-end tests marked slow
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/data_parallel.py
	$(BIN)/python bench/moa.py

clean:
	rm -rf $(VENV) runs data
