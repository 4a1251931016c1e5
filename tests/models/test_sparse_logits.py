"""The training loss computes logits only at scored positions; it must equal the full-logits loss exactly in
value and gradient, and models whose logits are not ``head(decoder(x))`` must take the full path."""
from __future__ import annotations

import copy

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from support import tiny_model_config
from test_model_io import make_batch
from vlbridge.models.sparse_logits import head_is_separable
from vlbridge.models.vlm import VLBridgeModel


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_scored_logits_loss_and_gradients_equal_the_full_forward(tiny_model, shapes_dir):
    torch.manual_seed(2)
    model = VLBridgeModel(tiny_model_config("mlp"), copy.deepcopy(tiny_model.tokenizer)).train()
    batch = make_batch(model, shapes_dir, n=4)
    assert model.separable_head()
    full = model(batch, return_logits=True)                  # return_logits forces the full [B, T, V] path
    full.loss.backward()
    g_full = grads(model)
    model.zero_grad()
    sparse = model(batch)
    assert sparse.logits is None
    sparse.loss.backward()
    g_sparse = grads(model)
    assert torch.allclose(sparse.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert sparse.n_tokens == full.n_tokens and sparse.weight_sum == full.weight_sum
    assert g_full.keys() == g_sparse.keys()
    for name in g_full:
        assert torch.allclose(g_sparse[name], g_full[name], rtol=1e-4, atol=1e-6), name


def test_post_processed_logits_are_not_separable():
    """Gemma-2 soft-caps its logits after the head: computing head(decoder(x)) would be wrong for it."""
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    capped = AutoModelForCausalLM.from_config(AutoConfig.for_model("gemma2", final_logit_softcapping=0.5, **common))
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **common))
    assert not head_is_separable(capped)
    assert head_is_separable(plain)
    assert plain.training                                     # the check leaves the mode as it found it
