"""One device value threaded through (vlbridge.models.device): no placement scattered in the code, the model moves
what it is given, inference in a half-precision dtype, and the GPU smoke script skipping where there is no GPU.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlbridge.data.dataset import collate
from vlbridge.data.records import SkipReport, load_records
from vlbridge.generate import GenerationConfig, generate
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.train.data import make_dataset
from vlbridge.config import DataConfig

ROOT = Path(__file__).parents[2]
DEVICE_MODULES = {"models/device.py", "models/precision.py"}          # the only places that talk to torch.cuda


def test_no_placement_outside_the_device_modules():
    offenders = []
    for path in sorted((ROOT / "src" / "vlbridge").rglob("*.py")):
        rel = path.relative_to(ROOT / "src" / "vlbridge").as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.cuda\(|device\s*=\s*['\"]cuda|torch\.cuda\.|\.to\(['\"]cuda", line) and \
                    rel not in DEVICE_MODULES:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "placements outside models/device.py:\n" + "\n".join(offenders)


def test_a_model_loaded_in_bf16_generates_from_cpu_batches(tiny_model, shapes_dir, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    model = VLBridgeModel.from_pretrained(tmp_path / "m", device=torch.device("cpu"), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and model.device == torch.device("cpu")
    records = load_records(shapes_dir / "test.json")[:3]
    batch = collate([s for s in make_dataset(records, model, DataConfig(), SkipReport(), for_generation=True)])
    assert batch.pixel_values.dtype == torch.float32                   # the model casts what it is given
    out = generate(model, batch.input_ids, batch.pixel_values, GenerationConfig(max_new_tokens=4))
    assert len(out) == 3 and all(len(o) >= 1 for o in out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script runs instead of skipping")
def test_gpu_smoke_script_skips_cleanly_without_a_gpu():
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_smoke.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU visible" in done.stdout and "skipped" in done.stdout


@pytest.mark.parametrize("connector, options", [("mlp", {}), ("qformer", {"hidden": 32, "layers": 1, "heads": 2,
                                                                          "intermediate": 64, "num_queries": 4,
                                                                          "instruction_aware": True})])
def test_the_model_embeds_cpu_batches_where_it_lives(tiny_model, shapes_dir, connector, options):
    """The model on the meta device (standing in for a GPU: any CPU tensor meeting it is a device mismatch) embeds
    a batch handed over on the CPU: pixels, ids, labels, image placeholders, instruction text."""
    from support import tiny_model_config
    model = VLBridgeModel(tiny_model_config(connector, options), copy.deepcopy(tiny_model.tokenizer)).eval()
    records = load_records(shapes_dir / "train.json")[:3]
    batch = collate([s for s in make_dataset(records, model, DataConfig(), SkipReport())])
    model.to("meta")
    spliced, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
    for tensor in (spliced.inputs_embeds, spliced.attention_mask, spliced.position_ids, spliced.labels,
                   spliced.visual_mask):
        assert tensor.device.type == "meta"
    assert spliced.inputs_embeds.shape[0] == 3
