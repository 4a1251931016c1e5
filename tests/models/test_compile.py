"""`--train.compile`: the LLM's decoder layers compiled in place compute the same loss and gradients as eager,
keep their parameter names (checkpoints unchanged), and a model without a named decoder block is refused."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from support import tiny_model_config
from test_model_io import make_batch
from test_sparse_logits import grads
from vlbridge.models.compile import compile_decoder_layers
from vlbridge.models.vlm import VLBridgeModel

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings


def test_compiled_layers_match_eager_and_keep_parameter_names(tiny_model, shapes_dir):
    torch.manual_seed(3)
    eager = VLBridgeModel(tiny_model_config("mlp"), copy.deepcopy(tiny_model.tokenizer)).train()
    compiled = copy.deepcopy(eager)
    names = list(compiled.state_dict())
    assert compile_decoder_layers(compiled.llm) == compiled.llm.config.num_hidden_layers
    assert list(compiled.state_dict()) == names
    for n in (4, 3):                                        # a second sequence length: dynamic shapes
        batch = make_batch(eager, shapes_dir, n=n)
        eager.zero_grad()
        compiled.zero_grad()
        a, b = eager(batch), compiled(batch)
        a.loss.backward()
        b.loss.backward()
        assert torch.allclose(a.loss, b.loss, rtol=1e-5, atol=1e-6)
        ga, gb = grads(eager), grads(compiled)
        assert ga.keys() == gb.keys()
        for name in ga:
            assert torch.allclose(ga[name], gb[name], rtol=1e-3, atol=1e-5), name


def test_a_model_without_a_decoder_block_is_refused():
    with pytest.raises(ValueError, match="no decoder layer class"):
        compile_decoder_layers(nn.Linear(2, 2))
