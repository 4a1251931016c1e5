"""Activation checkpointing (vlbridge.models.activation_checkpointing) on a tiny model.

With the LLM, the vision encoder and a many-layer connector (Q-Former, resampler) checkpointed, the loss and every
gradient equal those of the same model without it, and the forward pass keeps fewer bytes for the backward pass
(so the recomputation really happens). Parameter names, and so saved models, are unchanged.
"""
from __future__ import annotations

import copy

import pytest
import torch

from support import tiny_model_config
from vlbridge.data.dataset import InstructionDataset, collate
from vlbridge.data.records import SkipReport, load_records
from vlbridge.errors import UserError
from vlbridge.models.activation_checkpointing import enable_activation_checkpointing
from vlbridge.models.vlm import VLBridgeModel

CONNECTORS = {"qformer": {"hidden": 32, "layers": 3, "heads": 2, "intermediate": 64, "num_queries": 6},
              "resampler": {"num_latents": 5, "layers": 3, "heads": 2, "head_dim": 8}}


def batch_of(model, shapes_dir, n: int = 3):
    records = load_records(shapes_dir / "train.json")[:n]
    ds = InstructionDataset(records, model.builder, model.vision.image_transform(), model.cfg.llm.max_length,
                            model.visual_tokens_per_image(), SkipReport(), on_error="raise")
    return collate([ds[i] for i in range(len(ds))])


def step(model, batch) -> tuple[float, dict[str, torch.Tensor], int]:
    """Loss, gradients and the bytes the forward pass saved for backward (outside any checkpointed block)."""
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    torch.manual_seed(0)
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(out.loss.detach()), grads, saved


@pytest.mark.parametrize("connector", sorted(CONNECTORS))
def test_checkpointing_gives_the_same_loss_and_gradients_with_less_kept(tiny_model, shapes_dir, connector):
    torch.manual_seed(1)
    plain = VLBridgeModel(tiny_model_config(connector, CONNECTORS[connector]),
                          copy.deepcopy(tiny_model.tokenizer)).train()
    checkpointed = copy.deepcopy(plain)
    done = enable_activation_checkpointing(checkpointed, ["llm", "vision", "connector"])
    assert [d.split(":")[0] for d in done] == ["llm", "vision", "connector"]
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in checkpointed.named_parameters()]
    batch = batch_of(plain, shapes_dir)

    loss_a, grads_a, kept_a = step(plain, batch)
    loss_b, grads_b, kept_b = step(checkpointed, batch)
    assert loss_a == pytest.approx(loss_b, rel=1e-6, abs=1e-6)
    assert grads_a.keys() == grads_b.keys()
    assert any(n.startswith("vision.") for n in grads_a) and any(n.startswith("connector.") for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-6, msg=name)
    print(f"{connector}: kept for backward {kept_a / 1e6:.2f} MB -> {kept_b / 1e6:.2f} MB with checkpointing")
    assert kept_b < 0.7 * kept_a


def test_a_connector_without_blocks_is_refused(tiny_model):
    model = VLBridgeModel(tiny_model_config("mlp"), copy.deepcopy(tiny_model.tokenizer))
    with pytest.raises(UserError, match="no repeated blocks"):
        enable_activation_checkpointing(model, ["connector"])
