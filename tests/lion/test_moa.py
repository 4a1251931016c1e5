"""Mixture of adapters with a task router (vlbridge.lion.moa), as properties:

- zero-initialised adapters leave every output exactly the base model's, for Llama, Qwen2 and GPT-2 style LMs;
  an LM without decoder-layer MLPs is refused with a message naming it;
- routing is per sample: for a region-typed sample the image adapter's parameters get exactly zero gradient,
  and changing the region adapter changes only region-typed outputs;
- one shared adapter (K = 1) is open for every type; the routing context checks the batch size and nests;
- LoRA + MoA: a LION stage trains the adapters it names beside LoRA, and the pair survives save/load.
"""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vlbridge.lion.moa import TaskRouter, decoder_layers, install_moa, is_moa_parameter

TYPES = ("image", "region")
ARCHS = {
    "llama": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=50),
    "qwen2": dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=50),
    "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=64),
}


def tiny_lm(arch: str):
    torch.manual_seed(0)
    kw = dict(ARCHS[arch])
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kw.pop("model_type"), **kw)).eval()


def randomise_adapters(llm, seed: int = 1) -> None:
    """Give the zero-initialised up projections values, so every adapter contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in llm.named_parameters():
            if "moa_adapters" in name and "w_up" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fresh_adapters_leave_the_outputs_exactly_the_base_models(arch):
    base = tiny_lm(arch)
    moa = copy.deepcopy(base)
    router = TaskRouter(TYPES, "image")
    wrappers = install_moa(moa, 2, 8, router)
    assert len(wrappers) == 2 and all(w.ffn is not None for w in wrappers)
    ids = torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        expected = base(ids).logits
        with router.routing(["image", "region", "region"]):
            got = moa(ids).logits
        default = moa(ids).logits
    assert torch.equal(expected, got) and torch.equal(expected, default)
    # with the router trainable the adapters run (their zeros are added) and the outputs are still exact
    for w in wrappers:
        w.moa_router.requires_grad_(True)
    with torch.no_grad(), router.routing(["region", "image", "region"]):
        assert torch.equal(expected, moa(ids).logits)


def test_an_lm_without_decoder_mlps_is_refused_by_name():
    opt = AutoModelForCausalLM.from_config(AutoConfig.for_model("opt", hidden_size=16, ffn_dim=32, num_hidden_layers=1,
                                                                num_attention_heads=2, word_embed_proj_dim=16,
                                                                vocab_size=40))
    with pytest.raises(ValueError, match="OPTForCausalLM.*opt.*mlp"):
        install_moa(opt, 2, 8, TaskRouter(TYPES, "image"))


def test_wrapping_twice_is_refused():
    llm = tiny_lm("llama")
    router = TaskRouter(TYPES, "image")
    install_moa(llm, 2, 8, router)
    with pytest.raises(ValueError, match="already wrapped"):
        install_moa(llm, 2, 8, router)


def test_routing_is_per_sample_in_the_gradients_and_the_outputs():
    llm = tiny_lm("llama")
    router = TaskRouter(TYPES, "image")
    install_moa(llm, 2, 8, router)
    randomise_adapters(llm)
    ids = torch.randint(0, 50, (2, 6))
    types = ["image", "region"]

    with router.routing(types):
        logits = llm(ids).logits                                          # [2, T, V]
    logits[1].square().mean().backward()                                  # the region-typed sample alone
    image_grads = [p.grad for n, p in llm.named_parameters() if ".moa_adapters.0." in n]
    region_grads = [p.grad for n, p in llm.named_parameters() if ".moa_adapters.1." in n]
    assert image_grads and all(g is None or torch.count_nonzero(g) == 0 for g in image_grads)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in region_grads)

    with torch.no_grad():
        with router.routing(types):
            before = llm(ids).logits
        for n, p in llm.named_parameters():
            if ".moa_adapters.1." in n:
                p.add_(torch.randn_like(p) * 0.3)                          # change the region adapter
        with router.routing(types):
            after = llm(ids).logits
    assert torch.equal(before[0], after[0])                               # image-typed: untouched
    assert not torch.allclose(before[1], after[1])                        # region-typed: changed


def test_one_shared_adapter_is_open_for_every_type():
    llm = tiny_lm("llama")
    router = TaskRouter(TYPES, "image")
    (first, *_) = install_moa(llm, 1, 8, router)
    assert first.moa_router.shape == (2, 1, 32)
    assert torch.equal(first.moa_router, torch.ones(2, 1, 32))
    randomise_adapters(llm)
    ids = torch.randint(0, 50, (2, 5))
    with torch.no_grad(), router.routing(["image", "region"]):
        a = llm(ids).logits
    with torch.no_grad(), router.routing(["region", "image"]):
        b = llm(ids).logits
    assert torch.equal(a, b)                                              # the same adapter whatever the type


def test_routing_context_checks_sizes_names_and_nests():
    llm = tiny_lm("llama")
    router = TaskRouter(TYPES, "region")
    install_moa(llm, 2, 8, router)
    ids = torch.randint(0, 50, (2, 5))
    with router.routing(["image", "region", "image"]):
        with pytest.raises(ValueError, match="3 samples but the LLM ran on 2"):
            llm(ids)
    with pytest.raises(ValueError, match="unknown task type 'caption'"):
        with router.routing(["caption"]):
            pass
    assert router.routes(2).tolist() == [1, 1]                            # outside: the default type
    with router.routing(["image", "image"]):
        with router.routing(["region", "image"]):
            assert router.routes(2).tolist() == [1, 0]
        assert router.routes(2).tolist() == [0, 0]
    assert decoder_layers(llm) is llm.model.layers
    assert is_moa_parameter("llm.model.layers.0.mlp.moa_router")
    assert is_moa_parameter("llm.model.layers.0.mlp.moa_adapters.1.w_up.weight")
    assert not is_moa_parameter("llm.model.layers.0.mlp.ffn.up_proj.weight")


def test_lora_with_moa_trains_both_and_round_trips(tiny_model, shapes_dir, tmp_path):
    from support import tiny_model_config
    from vlbridge.connectors.lion import LionConnector
    from vlbridge.models.vlm import VLBridgeModel
    from vlbridge.train.stages import apply_stage
    torch.manual_seed(0)
    cfg = tiny_model_config("lion", {"qformer": {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32,
                                                 "num_queries": 2}, "aggregator_heads": 2, "adapter_bottleneck": 4})
    model = VLBridgeModel(cfg, copy.deepcopy(tiny_model.tokenizer))
    model.apply_lora(4, 8, ["q_proj", "v_proj"])
    stages = LionConnector.stages(model.connector.options)
    apply_stage(model, stages["instruct"])
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trained)
    assert any("moa_adapters.0" in n for n in trained) and any("moa_router" in n for n in trained)
    assert not any(n.startswith("llm.") and "lora_" not in n and "moa_" not in n for n in trained)
    apply_stage(model, stages["region"])               # the LLM frozen: adapter 2 (and the <soft> row) only
    trained = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("llm.")
               and "embed_tokens" not in n}
    assert trained and all(".moa_adapters.1." in n for n in trained)

    randomise_adapters(model.llm)
    model.save_pretrained(tmp_path / "m")
    loaded = VLBridgeModel.from_pretrained(tmp_path / "m")
    assert loaded.lora is not None
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_the_fused_computation_equals_the_formula():
    """out = FFN(x) + sum_k G[t, k] * A_k(x) per sample, with trainable (non one-hot) gates and K = 3."""
    llm = tiny_lm("llama")
    router = TaskRouter(TYPES, "image")
    (layer, *_) = install_moa(llm, 3, 8, router)
    randomise_adapters(llm)
    with torch.no_grad():
        layer.moa_router.copy_(torch.rand_like(layer.moa_router))
        for a in layer.moa_adapters:
            a.scale.fill_(0.7)
            a.w_up.bias.normal_()
    layer.moa_router.requires_grad_(True)
    x = torch.randn(3, 5, 32)
    types = ["region", "image", "region"]
    with torch.no_grad(), router.routing(types):
        got = layer(x)
    expected = layer.ffn(x).clone()
    for b, t in enumerate(types):
        g = layer.moa_router[TYPES.index(t)]                                  # [K, D]
        expected[b] += sum(g[k] * a(x[b]) for k, a in enumerate(layer.moa_adapters))
    assert torch.allclose(got, expected, atol=1e-5)
