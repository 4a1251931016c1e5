"""The peer connectors (qformer, resampler, cabstractor, pixel_shuffle): shapes, gradients, FLOPs, the
property each one is known for, training in the foundation's loop, save/reload and `vlbridge connectors`.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from support import tiny_model_config, tiny_run_config
from vlbridge.cli.main import main
from vlbridge.connectors import CONNECTORS, VisualFeatures, build_connector
from vlbridge.connectors.pixel_shuffle import space_to_depth
from vlbridge.connectors.resampler import sincos_2d
from vlbridge.data.records import Turn
from vlbridge.models.instruction_text import InstructionText, instruction_spans

VIS, LLM = 16, 24
TINY = {
    "qformer": dict(num_queries=5, hidden=16, layers=3, heads=2, intermediate=32),
    "qformer_instruct": dict(num_queries=5, hidden=16, layers=3, heads=2, intermediate=32, instruction_aware=True,
                             max_text_len=8),
    "resampler": dict(num_latents=6, layers=2, heads=2, head_dim=8),
    "resampler_sincos": dict(num_latents=6, layers=2, heads=2, head_dim=8, hidden=12, pos_embed="sincos"),
    "resampler_learned": dict(num_latents=6, layers=2, heads=2, head_dim=8, pos_embed="learned"),
    "cabstractor": dict(depth=1, hidden=8, grid_out=[2, 3]),
    "cabstractor_dense_se": dict(depth=1, hidden=8, grid_out=[2, 3], group_size=0, se_ratio=0.25),
    "pixel_shuffle": dict(factor=2),
}
EXPECTED_TOKENS = {"qformer": 5, "qformer_instruct": 5, "resampler": 6, "resampler_sincos": 6,
                   "resampler_learned": 6, "cabstractor": 6, "cabstractor_dense_se": 6, "pixel_shuffle": 6}
GRID = (4, 6)


def make(variant: str, grid=GRID, vis=VIS, llm=LLM, **over):
    torch.manual_seed(0)
    name = variant if variant in CONNECTORS else variant.split("_")[0]        # qformer_instruct -> qformer
    return build_connector(name, {**TINY[variant], **over}, vis, llm, grid)


def feats(batch=3, grid=GRID, vis=VIS, prefix=0, seed=1, text=None) -> VisualFeatures:
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1] + prefix
    return VisualFeatures(torch.randn(batch, n, vis, generator=g), tuple(grid), text=text)


def instruction(batch, lengths, seed=2) -> InstructionText:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    return InstructionText(torch.randn(batch, T, LLM, generator=g), mask)


# ---- every peer: shapes, gradients, FLOPs ----------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(TINY))
def test_output_shapes_and_lengths(variant):
    c = make(variant).eval()
    text = instruction(3, [4, 1, 6]) if variant == "qformer_instruct" else None
    out = c(feats(text=text))
    m = EXPECTED_TOKENS[variant]
    assert c.num_tokens() == m and out.tokens.shape == (3, m, LLM)
    assert [t.shape for t in out.per_image()] == [(m, LLM)] * 3
    assert torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("variant", sorted(TINY))
def test_gradients_reach_every_parameter(variant):
    c = make(variant).train()
    text = instruction(3, [4, 1, 6]) if variant == "qformer_instruct" else None
    f = feats(text=text)
    f.features.requires_grad_(True)
    out = c(f).tokens
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(5))).sum().backward()
    dead = [n for n, p in c.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    assert f.features.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", sorted(TINY))
def test_flops_match_a_flop_counter(variant):
    """flops() = what torch's FlopCounterMode counts (matmuls, convs, attention via the math SDPA kernel)."""
    c = make(variant).eval()
    text_len = 6 if variant == "qformer_instruct" else 0
    text = instruction(2, [text_len, text_len]) if text_len else None
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        c(feats(batch=2, text=text))
    expected = c.flops(2, text_len=text_len) if text_len else c.flops(2)
    assert counter.get_total_flops() == expected


@pytest.mark.parametrize("variant", ["cabstractor", "pixel_shuffle"])
def test_grid_connectors_drop_a_cls_prefix(variant):
    c = make(variant).eval()
    with_cls = feats(prefix=1)
    without = VisualFeatures(with_cls.features[:, 1:], GRID)
    assert torch.equal(c(with_cls).tokens, c(without).tokens)
    with pytest.raises(ValueError, match="grid"):
        c(VisualFeatures(with_cls.features[:, :10], GRID))


def test_resampler_position_embedding_skips_the_cls_prefix():
    c = make("resampler_sincos").eval()
    f = feats(prefix=1)
    assert c(f).tokens.shape == (3, 6, LLM)
    with pytest.raises(ValueError, match="grid"):
        c(VisualFeatures(f.features, (3, 6)))


# ---- qformer ----------------------------------------------------------------------------------------------
def test_qformer_queries_are_normal_0_002():
    torch.manual_seed(0)
    c = build_connector("qformer", dict(num_queries=64, hidden=64, layers=1, heads=2, intermediate=8), VIS, LLM, GRID)
    q = c.queries.detach().flatten()
    assert abs(q.mean().item()) < 1.5e-3 and abs(q.std().item() - 0.02) < 1.5e-3
    # and they are the connector's only query source: different queries, different outputs
    f = feats()
    before = c.eval()(f).tokens
    with torch.no_grad():
        c.queries.mul_(-1)
    assert not torch.allclose(before, c(f).tokens)


@pytest.mark.parametrize("layers,every,expected", [(5, 2, [0, 2, 4]), (5, 3, [0, 3]), (3, 1, [0, 1, 2]), (2, 4, [0])])
def test_qformer_cross_attention_every_k_layers(layers, every, expected):
    c = make("qformer", layers=layers, cross_attention_every=every).eval()
    assert [i for i, layer in enumerate(c.layers) if layer.cross_attn is not None] == expected
    # every cross-attention layer is used: zeroing its output projection changes the result
    f = feats()
    before = c(f).tokens
    for i in expected:
        probe = copy.deepcopy(c)
        with torch.no_grad():
            probe.layers[i].cross_attn.out_proj.weight.zero_()
            probe.layers[i].cross_attn.out_proj.bias.zero_()
        assert not torch.allclose(before, probe(f).tokens), f"layer {i}'s cross-attention has no effect"


def test_qformer_instruction_changes_outputs_only_in_instruction_aware_mode():
    f = feats()
    a, b = instruction(3, [5, 5, 5], seed=2), instruction(3, [5, 5, 5], seed=3)
    aware = make("qformer_instruct").eval()
    out_a = aware(VisualFeatures(f.features, GRID, text=a)).tokens
    assert not torch.allclose(out_a, aware(VisualFeatures(f.features, GRID, text=b)).tokens)
    plain = make("qformer").eval()
    assert not plain.wants_text and aware.wants_text
    assert torch.equal(plain(VisualFeatures(f.features, GRID, text=a)).tokens,
                       plain(VisualFeatures(f.features, GRID, text=b)).tokens)


def test_qformer_instruction_padding_is_ignored():
    aware = make("qformer_instruct").eval()
    f = feats(batch=1)
    short = instruction(1, [3])
    padded = InstructionText(torch.cat([short.embeds, torch.randn(1, 4, LLM)], 1),
                             torch.cat([short.mask, torch.zeros(1, 4, dtype=torch.bool)], 1))
    out_short = aware(VisualFeatures(f.features, GRID, text=short)).tokens
    torch.testing.assert_close(aware(VisualFeatures(f.features, GRID, text=padded)).tokens, out_short,
                               atol=1e-5, rtol=1e-5)
    unmasked = InstructionText(padded.embeds, torch.ones(1, 7, dtype=torch.bool))
    assert not torch.allclose(aware(VisualFeatures(f.features, GRID, text=unmasked)).tokens, out_short, atol=1e-5)


def test_model_passes_the_question_of_the_image_turn(tiny_model):
    """The instruction is the user text of the turn holding the image: never the answer, never other turns."""
    model = copy.deepcopy(tiny_model)
    b = model.builder
    turns = [Turn("user", "<image>\nWhat color is the circle?"), Turn("assistant", "red"),
             Turn("user", "And the square?"), Turn("assistant", "blue")]
    ids, _ = b.build(turns)
    (span,) = instruction_spans([torch.tensor(ids)], model.image_token_id, model.template, b.encode)
    assert span == b.encode("\nWhat color is the circle?")
    text = model.image_instructions([torch.tensor(ids)])
    assert text.embeds.shape == (1, len(span), model.llm_dim) and text.mask.all()


def _visual_rows(model, question: str, pixels: torch.Tensor) -> torch.Tensor:
    ids, _ = model.builder.build([Turn("user", f"<image>\n{question}")], for_generation=True)
    s, _ = model.embed([torch.tensor(ids)], None, pixels)
    return s.inputs_embeds[s.visual_mask]                              # [M, D_llm]


def test_instruction_aware_model_sees_the_question(tiny_model):
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for aware in (False, True):
        model = copy.deepcopy(tiny_model)
        opts = {**TINY["qformer"], "hidden": 32, "instruction_aware": aware}
        torch.manual_seed(0)
        model.connector = build_connector("qformer", opts, model.vision.out_dim, model.llm_dim, model.vision.grid)
        model.eval()
        with torch.no_grad():
            a = _visual_rows(model, "What color is the circle?", pixels)
            b = _visual_rows(model, "How many shapes are there?", pixels)
        assert a.shape == (5, model.llm_dim)
        assert torch.equal(a, b) != aware


# ---- resampler --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,invariant", [("resampler", True), ("resampler_sincos", False),
                                               ("resampler_learned", False)])
def test_resampler_permutation_property(variant, invariant):
    c = make(variant).eval()
    f = feats()
    perm = torch.randperm(GRID[0] * GRID[1], generator=torch.Generator().manual_seed(7))
    out = c(f).tokens
    shuffled = c(VisualFeatures(f.features[:, perm], GRID)).tokens
    assert torch.allclose(out, shuffled, atol=1e-5) == invariant


def test_sincos_2d_values():
    pe = sincos_2d(2, 3, 8)                                            # quarters: sin row, cos row, sin col, cos col
    assert pe.shape == (6, 8)
    torch.testing.assert_close(pe[0], torch.tensor([0., 0., 1., 1., 0., 0., 1., 1.]))
    n = 1 * 3 + 2                                                      # row 1, col 2
    freq = torch.tensor([1.0, 0.01])                                   # 1 / 10000^(i/2), i = 0, 1
    torch.testing.assert_close(pe[n], torch.cat([freq.sin(), freq.cos(), (2 * freq).sin(), (2 * freq).cos()]))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)


# ---- cabstractor ------------------------------------------------------------------------------------------
def _changed_tokens(c, grid, patch: tuple[int, int]) -> set[int]:
    f = feats(batch=1, grid=grid)
    g = f.features.clone()
    g[0, patch[0] * grid[1] + patch[1]] += 3.0
    with torch.no_grad():
        a, b = c(f).tokens[0], c(VisualFeatures(g, grid)).tokens[0]
    return {i for i in range(a.shape[0]) if not torch.equal(a[i], b[i])}


def test_cabstractor_locality_follows_the_receptive_field():
    """depth 1, 8x8 -> 4x4: a 3x3 conv (radius 1 patch), 2x2 pooling, a 3x3 conv (radius 1 cell).
    Token (0, 0) therefore sees patches rows/cols 0..4 and nothing beyond."""
    c = build_connector("cabstractor", dict(depth=1, hidden=8, grid_out=[4, 4]), VIS, LLM, (8, 8)).eval()
    assert 0 in _changed_tokens(c, (8, 8), (4, 4))
    for far in [(5, 0), (0, 5), (5, 5), (7, 7)]:
        assert 0 not in _changed_tokens(c, (8, 8), far), f"patch {far} reached token 0"
    assert _changed_tokens(c, (8, 8), (7, 7)) == {10, 11, 14, 15}    # the far corner's 2x2 tokens


def test_cabstractor_squeeze_excitation_is_global_and_groups_are_depthwise():
    """Honeybee's SE gates channels by a mean over the whole grid: with it, locality is gone (documented)."""
    se = build_connector("cabstractor", dict(depth=1, hidden=8, grid_out=[4, 4], se_ratio=0.25), VIS, LLM, (8, 8))
    assert 0 in _changed_tokens(se.eval(), (8, 8), (7, 7))
    depthwise = build_connector("cabstractor", dict(depth=1, hidden=8), VIS, LLM, (8, 8))
    dense = build_connector("cabstractor", dict(depth=1, hidden=8, group_size=0), VIS, LLM, (8, 8))
    assert dense.num_parameters() - depthwise.num_parameters() == 2 * (8 * 8 * 9 - 8 * 9)   # two 3x3 convs


def test_cabstractor_rectangular_grid_keeps_raster_order():
    c = make("cabstractor", depth=0).eval()                             # pooling + MLP only: no spatial mixing
    rows, cols = GRID                                                   # 4x6 -> 2x3, each token = a 2x2 block
    assert _changed_tokens(c, GRID, (0, cols - 1)) == {2}               # top-right patch -> token (0, 2)
    assert _changed_tokens(c, GRID, (rows - 1, 0)) == {3}               # bottom-left patch -> token (1, 0)
    with pytest.raises(ValueError, match="grid_out"):
        build_connector("cabstractor", dict(grid_out=[5, 2]), VIS, LLM, GRID)


# ---- pixel_shuffle ----------------------------------------------------------------------------------------
def _identity_shuffle(grid, r=2, vis=2, **over):
    c = build_connector("pixel_shuffle", dict(factor=r, depth=1, norm=False, **over), vis, vis * r * r, grid)
    with torch.no_grad():
        c.mlp[0].weight.copy_(torch.eye(vis * r * r))
        c.mlp[0].bias.zero_()
    return c


def test_pixel_shuffle_exact_layout():
    rows, cols, D = 4, 6, 2
    x = (torch.arange(rows * cols)[:, None] * 10 + torch.arange(D)[None]).float()[None]   # patch n, channel d: 10n + d
    expected = torch.tensor([[10 * ((2 * i + dy) * cols + 2 * j + dx) + d
                              for dy in (0, 1) for dx in (0, 1) for d in (0, 1)]
                             for i in range(2) for j in range(3)], dtype=torch.float32)[None]
    assert torch.equal(space_to_depth(x, rows, cols, 2), expected)
    c = _identity_shuffle((rows, cols))
    assert torch.equal(c(VisualFeatures(x, (rows, cols))).tokens, expected)
    # token (1, 2) holds patches (2,4), (2,5), (3,4), (3,5): ids 16, 17, 22, 23
    assert expected[0, 5].tolist() == [160, 161, 170, 171, 220, 221, 230, 231]


def test_pixel_shuffle_indivisible_grid_errors_or_pads():
    with pytest.raises(ValueError, match="not divisible by factor 2.*pad"):
        build_connector("pixel_shuffle", {}, VIS, LLM, (5, 6))
    rows, cols = 5, 6
    x = (torch.arange(rows * cols)[:, None] * 10 + torch.arange(2)[None]).float()[None] + 1   # all non-zero
    c = _identity_shuffle((rows, cols), pad=True)
    out = c(VisualFeatures(x, (rows, cols))).tokens[0]
    assert c.num_tokens() == 9 and out.shape == (9, 8)
    torch.testing.assert_close(out[:6], space_to_depth(x[:, :24], 4, 6, 2)[0])   # first two token rows: unpadded
    last = out[6:].view(3, 2, 2, 2)                                    # [token, dy, dx, d]
    assert torch.equal(last[:, 1], torch.zeros(3, 2, 2))                # dy = 1 is the zero padding row
    assert last[0, 0, 0].tolist() == [10 * 24 + 1, 10 * 24 + 2]        # patch (4, 0)


# ---- in the foundation: train, save, reload -----------------------------------------------------------------
LOOP = {
    "qformer": dict(num_queries=4, hidden=32, layers=2, heads=2, intermediate=64, instruction_aware=True),
    "resampler": dict(num_latents=4, layers=2, heads=2, head_dim=8, pos_embed="sincos"),
    "cabstractor": dict(depth=1, hidden=16, grid_out=[2, 2]),
    "pixel_shuffle": dict(factor=2),
}


@pytest.mark.parametrize("name", sorted(LOOP))
def test_trains_in_the_loop_and_reloads(name, shapes_dir, tmp_path):
    from vlbridge.models.vlm import VLBridgeModel
    from vlbridge.train.trainer import Trainer
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=2)
    cfg.model = tiny_model_config(name, LOOP[name])
    trainer = Trainer(cfg)
    trainer.setup()
    start = {k: v.clone() for k, v in trainer.model.connector.state_dict().items()}
    final = trainer.train()
    moved = [k for k, v in trainer.model.connector.state_dict().items() if not torch.equal(v, start[k])]
    assert moved, "training did not change the connector"

    again = VLBridgeModel.from_pretrained(final)
    saved = json.loads((final / "config.json").read_text())["connector"]
    assert saved["name"] == name and {k: saved["options"][k] for k in LOOP[name]} == LOOP[name]
    model = trainer.model.eval()
    batch = [torch.tensor(model.builder.build([Turn("user", f"<image>\n{q}")], for_generation=True)[0])
             for q in ("What color is the circle?", "How many shapes are there?")]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, _ = model.embed(batch, None, pixels)
        b, _ = again.embed(batch, None, pixels)
    assert torch.equal(a.inputs_embeds, b.inputs_embeds) and a.visual_mask.sum() == 2 * model.connector.num_tokens()


# ---- vlbridge connectors ------------------------------------------------------------------------------------
SMALL = {"qformer": {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128}}


def test_connectors_command_lists_every_connector(capsys):
    assert main(["connectors", "--preset", "tiny-cpu", "--json", "--connector-options", json.dumps(SMALL)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["grid"] == [8, 8] and report["vision_dim"] == 128 and report["llm_dim"] == 128
    rows = {r["connector"]: r for r in report["connectors"]}
    assert set(rows) == set(CONNECTORS)
    for name in ("mlp", "qformer", "resampler", "cabstractor", "pixel_shuffle"):
        c = build_connector(name, SMALL.get(name, {}), 128, 128, (8, 8))
        assert (rows[name]["tokens"], rows[name]["params"], rows[name]["flops"]) == \
               (c.num_tokens(), c.num_parameters(), c.flops(1)), name
    assert rows["pixel_shuffle"]["tokens"] == 16 and rows["mlp"]["tokens"] == 64


def test_connectors_command_table_and_errors(capsys):
    opts = {**SMALL, "pixel_shuffle": {"factor": 3}}
    assert main(["connectors", "--connector-options", json.dumps(opts)]) == 0
    out = capsys.readouterr().out
    assert "patch grid 8x8" in out and all(name in out for name in CONNECTORS)
    assert "not divisible by factor 3" in out                          # a connector that cannot take the grid
    assert main(["connectors", "--preset", "clip-qwen2"]) == 2        # checkpoints that are not on disk
    assert "not a local directory" in capsys.readouterr().err
    assert main(["connectors", "--connector-options", '{"nope": {}}']) == 2
    assert "unknown connector" in capsys.readouterr().err


@pytest.mark.parametrize("template", ["plain", "chatml", "vicuna"])
def test_instruction_spans_per_template(template):
    """Character-level 'tokens' make the expected span easy to write down for every template."""
    from vlbridge.data.template import get_template
    t, IMG = get_template(template), -1
    enc = lambda text: [ord(ch) for ch in text]                         # noqa: E731
    system = enc(t.system_prefix) + enc("Be brief.") + enc(t.user_suffix) if t.system_prefix else []
    ids = (system + enc(t.user_prefix) + enc("Look: ") + [IMG] + enc("\nWhat colour?") + enc(t.user_suffix)
           + enc(t.assistant_prefix) + enc("red") + enc(t.assistant_suffix)
           + enc(t.user_prefix) + [IMG] + enc(" and this?") + enc(t.user_suffix) + enc(t.assistant_prefix))
    first, second = instruction_spans([torch.tensor(ids)], IMG, t, enc)
    tail = t.user_suffix if not t.user_suffix.strip() else ""          # a blank turn end stays in the span
    assert first == enc("Look: \nWhat colour?" + tail)
    assert second == enc(" and this?" + tail)


def test_connectors_command_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["connectors", "--help"])
    out = capsys.readouterr().out
    flags = ("--preset", "--connector-options", "--json", "--vision", "--llm", "--model.vision.name-or-path",
             "--model.llm.arch")
    assert e.value.code == 0 and all(flag in out for flag in flags)
