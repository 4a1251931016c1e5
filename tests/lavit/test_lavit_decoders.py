"""LaVIT decoders: the feature decoder's straight-through layout (all positions + keep mask + weights) equals
decoding the gathered codes; the tokenizer's training forward (kept tokens only, or every position with
straight-through weights) equals the all-position reference, gradients included; codes learn their position;
the merger's offset bias; the palette pixel decoder."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from vlbridge.lavit.feature_decoder import grid_positions
from vlbridge.lavit.merger import RelativeBias
from vlbridge.lavit.merger_reference import merge_all_tokens
from vlbridge.lavit.options import TokenizerOptions
from vlbridge.lavit.pixel_decoder import PixelDecoder
from vlbridge.lavit.visual_tokenizer import DynamicVisualTokenizer

GRID, D = (4, 4), 16


def tokenizer() -> DynamicVisualTokenizer:
    torch.manual_seed(0)
    opts = TokenizerOptions(width=16, heads=2, merger_layers=1, decoder_layers=2, codebook_size=8, image_size=16,
                            pixel_channels=[8, 8], pixel_palette=4)
    return DynamicVisualTokenizer(opts, D, GRID).eval()


def test_training_layout_equals_decoding_gathered_codes():
    tok = tokenizer()
    x = torch.randn(3, 16, D)
    out = tok(x, "argmax", quantize=False)                             # hard decisions: the kept codes
    gathered = tok.quantizer.encode(out.merged.tokens)                 # [B, M, C] kept codes in raster order
    raw = tok.decoder.locate(gathered)                                 # training places by the raw read-out
    assert torch.allclose(out.recon, tok.decoder(gathered, out.merged.valid, positions=raw), atol=1e-5)
    soft = torch.rand(3, 16, requires_grad=True)
    weight = out.selection.keep.float() + (soft - soft.detach())      # straight-through weights, same values
    seq = (out.selection.keep.long().cumsum(1) - 1).clamp(min=0)
    full = tok.quantizer.encode(merge_all_tokens(tok.merger, tok.inp(x), out.selection).full)   # every position
    st = tok.decoder(full, out.selection.keep, seq, weight, positions=tok.decoder.locate(full))
    assert torch.allclose(st, out.recon, atol=1e-5)
    st.sum().backward()
    assert soft.grad.abs().sum() > 0                                   # every keep decision gets a gradient


def reference_forward(tok, x, sel, quantize: bool, placement: str):
    """The tokenizer's training forward over every position (all-token merger, codes of all N positions
    admitted by the keep mask with the selection's weights): what the kept-token forward must equal."""
    merged = merge_all_tokens(tok.merger, tok.inp(x), sel)
    qz = tok.quantizer(merged.full, sel.keep) if quantize else None
    codes = qz.q if quantize else tok.quantizer.encode(merged.full)    # [B, N, C]
    where = tok.decoder.locate(codes)
    true = tok.decoder.query_pos.expand_as(where)
    seq = (sel.keep.long().cumsum(1) - 1).clamp(min=0)
    recon = tok.decoder(codes, sel.keep, seq, sel.weight, {"true": true, "readout": where}[placement])
    err = ((where - true) ** 2).sum(-1) * sel.keep
    return recon, err.sum() / sel.keep.sum(), qz


@pytest.mark.parametrize("straight_through", [False, True])
@pytest.mark.parametrize("quantize,placement", [(False, "true"), (True, "readout")])
def test_tokenizer_forward_equals_the_all_position_reference(straight_through, quantize, placement):
    """Same decisions (seeded Gumbel), same reconstruction, losses and gradients (straight-through ones too)."""
    tok = tokenizer().double()
    x = torch.randn(4, 16, D, dtype=torch.float64)
    target = torch.randn(4, 16, D, dtype=torch.float64)
    grads, values = [], []
    for path in ("kept", "reference"):
        tok.zero_grad(set_to_none=True)
        gen = torch.Generator().manual_seed(7)
        if path == "kept":
            out = tok(x, "gumbel", quantize=quantize, generator=gen, placement=placement,
                      straight_through=straight_through)
            recon, position, qz = out.recon, out.aux["position"], out.quantized
            assert (out.merged.full is not None) == straight_through   # dropped positions: only for that gradient
        else:
            sel = tok.select(x, "gumbel", gen)
            if not straight_through:
                sel = dataclasses.replace(sel, weight=sel.weight.detach())
            recon, position, qz = reference_forward(tok, x, sel, quantize, placement)
            position = position * tok.options.position_weight
        loss = (recon - target).square().mean() + position + (qz.commitment if quantize else 0)
        loss.backward()
        values.append((recon.detach(), float(position.detach()), float(qz.commitment.detach()) if quantize else 0.0))
        grads.append({n: p.grad.clone() for n, p in tok.named_parameters() if p.grad is not None})
    (r_new, p_new, c_new), (r_ref, p_ref, c_ref) = values
    assert (r_new - r_ref).abs().max() <= 1e-5
    assert abs(p_new - p_ref) <= 1e-5 and abs(c_new - c_ref) <= 1e-5
    assert grads[0].keys() == grads[1].keys()
    assert ("selector.inp.weight" in grads[1]) == straight_through    # the decisions' gradient, or none
    for name, g in grads[1].items():
        assert (grads[0][name] - g).abs().max() <= 1e-5 * max(1.0, float(g.abs().max())), name


def test_position_loss_is_measured_on_kept_codes_and_trains_the_read_out():
    tok = tokenizer().train()
    x = torch.randn(8, 16, D)
    opt = torch.optim.Adam(tok.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        out = tok(x, "gumbel", quantize=False, noise=0.0)
        loss = out.aux["position"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first                                   # codes learn where they sit
    pos = grid_positions(GRID)
    assert torch.allclose(pos[5], torch.tensor([1.5 / 4, 1.5 / 4]))    # raster (y, x) patch centres


def test_relative_bias_depends_only_on_the_offset():
    rb = RelativeBias(2, (3, 3))
    with torch.no_grad():
        rb.table.normal_()
    b = rb()[0]                                                        # [H, 9, 9]
    assert b.shape == (2, 9, 9)
    assert torch.equal(b[:, 0, 4], b[:, 4, 8])                         # offset (+1, +1) twice
    assert not torch.equal(b[:, 0, 4], b[:, 4, 0])                     # (+1, +1) vs (-1, -1)


def test_palette_pixel_decoder():
    dec = PixelDecoder(D, GRID, 16, [8, 8], palette=4)
    pixels = torch.zeros(2, 3, 16, 16)
    pixels[:, 0, :4, :4] = 1.0                                         # a red square on black
    pixels[0, 2, 8:, 8:] = 1.0                                         # a blue one in image 0
    assert dec.fit_palette(pixels) == 3
    assert {tuple(c) for c in dec.palette.tolist()} == {(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)}
    black = [i for i, c in enumerate(dec.palette.tolist()) if c == [0.0, 0.0, 0.0]][0]
    rare = [i for i, c in enumerate(dec.palette.tolist()) if c == [0.0, 0.0, 1.0]][0]
    assert dec.class_weight[black] == 1.0 and dec.class_weight[rare] > 1.0   # rarer colours weigh more
    assert torch.equal(dec.targets(pixels)[0, 0, 0], dec.targets(pixels)[1, 0, 0])
    out = dec(torch.randn(2, 16, D))
    assert out.shape == (2, 3, 16, 16)
    assert all(tuple(c) in {tuple(p) for p in dec.palette.tolist()} for c in out.permute(0, 2, 3, 1).reshape(-1, 3).tolist())


def test_keep_ratio_calibration_hits_the_budget_and_keeps_per_image_variation():
    from vlbridge.recipes.lavit.tokenizer_stage import calibrate_keep_ratio
    tok = tokenizer()
    x = torch.randn(40, 16, D) * torch.rand(40, 1, 1) * 3              # images of different "busyness"
    calibrate_keep_ratio(tok, x, 0.25)
    sel = tok.select(x, "argmax")
    assert abs(float(sel.keep.float().mean()) - 0.25) <= 1 / (40 * 16) + 1e-6
    assert sel.lengths.float().std() > 0


def test_salience_weights_favour_patches_unlike_the_background():
    from vlbridge.lavit.visual_tokenizer import cosine_loss, salience_weights
    torch.manual_seed(0)
    background = torch.randn(D)
    feats = background.repeat(2, 16, 1) + 0.01 * torch.randn(2, 16, D)
    objects = torch.tensor([3, 7, 12])
    feats[:, objects] = torch.randn(2, 3, D)                          # three object patches per image
    w = salience_weights(feats, background, floor=0.25)               # [2, 16]
    assert torch.allclose(w.mean(1), torch.ones(2), atol=1e-5)        # mean 1 per image
    others = torch.ones(16, dtype=torch.bool)
    others[objects] = False
    assert w[:, objects].min() > 3 * w[:, others].max() and w.min() >= 0.25 - 1e-6
    # a reconstruction right on the objects and wrong on the background is cheap under salience weights,
    # and the other way round is expensive: the loss follows the objects
    good_objects = background.repeat(2, 16, 1).neg()
    good_objects[:, objects] = feats[:, objects]
    good_background = feats.clone()
    good_background[:, objects] = -feats[:, objects]
    assert cosine_loss(good_objects, feats, w) < cosine_loss(good_background, feats, w)
    assert cosine_loss(good_objects, feats) > cosine_loss(good_background, feats)   # uniform: the opposite
    assert torch.allclose(cosine_loss(feats, feats, w), torch.tensor(0.0), atol=1e-6)


def test_attribute_probe_tells_kept_semantics_from_a_generic_object():
    from vlbridge.recipes.lavit.tokenizer_stage import SplitData, attribute_probe
    from vlbridge.recipes.vision_pretrain import patch_labels
    gen = torch.Generator().manual_seed(0)
    colors, shapes = ["red", "blue", "green"], ["circle", "square"]

    def split(n):
        scenes, feats = [], []
        for _ in range(n):
            c, s = colors[int(torch.randint(3, (1,), generator=gen))], shapes[int(torch.randint(2, (1,), generator=gen))]
            x0 = float(torch.randint(3, (1,), generator=gen)) / 4
            scenes.append({"objects": [{"color": c, "shape": s, "box": [x0, x0, x0 + 0.4, x0 + 0.4]}]})
            f = 0.1 * torch.randn(16, D, generator=gen)
            inside = patch_labels(scenes[-1]["objects"], GRID, "color", {c: 1}) > 0
            f[inside, colors.index(c)] += 3.0                       # attribute directions on the object's patches
            f[inside, 3 + shapes.index(s)] += 3.0
            f[inside, 8] += 5.0                                     # and a large component all objects share
            feats.append(f)
        feats = torch.stack(feats)
        return SplitData(feats, torch.zeros(n, 3, 4, 4), torch.ones(n), scenes)

    train, held = split(60), split(20)
    perfect = attribute_probe(train, held, held.features, GRID)
    assert perfect["color"]["reconstructed"] == perfect["color"]["real_features"] > 0.95
    generic = held.features.clone()
    generic[..., :5] = 0                                           # objects come back as "an object"
    lossy = attribute_probe(train, held, generic, GRID)
    assert lossy["color"]["reconstructed"] < 0.5 and lossy["shape"]["reconstructed"] < 0.6
    assert lossy["color"]["chance"] == 1 / 3


def test_placement_true_puts_codes_at_their_patches_and_detached_readout_blocks_the_gradient():
    tok = tokenizer().train()
    x = torch.randn(3, 16, D)
    out = tok(x, "argmax", quantize=False, placement="true")
    gathered = tok.quantizer.encode(out.merged.tokens)                 # [B, M, C] kept codes, raster order
    true_pos = grid_positions(GRID)[out.merged.positions.clamp(min=0)]  # [B, M, 2] their patch centres
    assert torch.allclose(out.recon, tok.decoder(gathered, out.merged.valid, positions=true_pos), atol=1e-5)
    readout = tok(x, "argmax", quantize=False)                         # default: the codes' own read-out
    assert not torch.allclose(readout.recon, out.recon, atol=1e-4)     # (untrained read-out: elsewhere)
    for placement, flows in (("readout", True), ("readout_detached", False), ("true", False)):
        tok.zero_grad()
        tok(x, "argmax", quantize=False, placement=placement).recon.sum().backward()
        grad = tok.decoder.where[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == flows, placement
    try:
        tok(x, "argmax", quantize=False, placement="nowhere")
        raise AssertionError("an unknown placement must be rejected")
    except ValueError:
        pass


def test_salience_prior_teaches_the_selector_to_keep_the_patches_unlike_the_background():
    from vlbridge.recipes.lavit.tokenizer_stage import salience_prior_loss
    tok = tokenizer().train()
    torch.manual_seed(1)
    background = torch.randn(D)
    feats = background.repeat(32, 16, 1) + 0.05 * torch.randn(32, 16, D)
    objects = torch.rand(32, 16) < 0.25                                # a quarter of the patches, anywhere
    feats[objects] = 3 * torch.randn(int(objects.sum()), D)
    opt = torch.optim.Adam(tok.selector.parameters(), lr=1e-2)
    for _ in range(150):
        loss = salience_prior_loss(tok.selector.log_probs(feats), feats, feats.mean((0, 1)), 0.25)
        opt.zero_grad()
        loss.backward()
        opt.step()
    keep = tok.select(feats, "argmax").keep
    assert float(keep[objects].float().mean()) > 0.9 and float(keep[~objects].float().mean()) < 0.1


def test_attribute_probe_ignores_the_length_of_the_reconstruction():
    """The tokenizer learns with a cosine loss, so a reconstruction's length is arbitrary: a perfect
    direction at a hundredth of the length must read as well as the real features."""
    from vlbridge.recipes.lavit.tokenizer_stage import SplitData, attribute_probe
    gen = torch.Generator().manual_seed(0)
    colors = ["red", "blue", "green"]

    def split(n):
        scenes, feats = [], []
        for _ in range(n):
            c = colors[int(torch.randint(3, (1,), generator=gen))]
            scenes.append({"objects": [{"color": c, "box": [0.0, 0.0, 0.45, 0.45]}]})
            f = 0.1 * torch.randn(16, D, generator=gen) + 2.0
            f[[0, 1, 4, 5], colors.index(c)] += 3.0
            feats.append(f)
        return SplitData(torch.stack(feats), torch.zeros(n, 3, 4, 4), torch.ones(n), scenes)

    train, held = split(40), split(20)
    scaled = attribute_probe(train, held, held.features * 0.01, GRID, attributes=("color",))
    assert scaled["color"]["reconstructed"] == scaled["color"]["real_features"] > 0.95


def test_align_snaps_read_out_positions_to_increasing_patches():
    tok = tokenizer()
    pos = grid_positions(GRID)
    torch.manual_seed(0)
    index = torch.tensor([[0, 3, 5, 6, 15], [1, 2, 3, 4, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]).bool()
    read = pos[index] + 0.03 * torch.randn(2, 5, 2)                    # within a fifth of a patch
    snapped = tok.decoder.align(read, valid)
    assert torch.equal(snapped[0], pos[index[0]]) and torch.equal(snapped[1, :4], pos[index[1, :4]])
    assert torch.equal(snapped[1, 4], read[1, 4])                      # padding untouched
    same = tok.decoder.align(pos[torch.tensor([[5, 5, 5]])], torch.ones(1, 3, dtype=torch.bool))   # three codes, one patch
    rows = (same[0] * 4 - 0.5).round().long()
    raster = rows[:, 0] * 4 + rows[:, 1]
    assert bool((raster[1:] > raster[:-1]).all()) and 5 in raster.tolist()   # forced apart, in raster order
    codes = torch.randn(2, 5, tok.options.code_dim)
    assert torch.allclose(tok.decoder(codes, valid), tok.decoder(codes, valid, positions=tok.decoder.align(
        tok.decoder.locate(codes), valid)))                               # decoding ids snaps by default


def test_pixel_phase_keeps_the_codes_and_tunes_the_feature_decoder_only_when_asked():
    from vlbridge.recipes.lavit.tokenizer_stage import SplitData, TokenizerTrainConfig, train_pixels
    feats = torch.randn(12, 16, D)
    pixels = torch.zeros(12, 3, 16, 16)
    for i in range(12):                                                # a red square where feature 0 is high
        r, c = divmod(int(feats[i, :, 0].argmax()), 4)
        pixels[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
    data = SplitData(feats, pixels, torch.ones(12), [{}] * 12)
    for tune in (False, True):
        tok = tokenizer()
        codes = tok.tokenize(feats)
        decoder = {k: v.clone() for k, v in tok.decoder.state_dict().items()}
        cfg = TokenizerTrainConfig(steps_pixels=30, batch_size=6, lr=1e-2, pixels_tune_decoder=tune)
        log: list[dict] = []
        train_pixels(tok, data, cfg, torch.Generator().manual_seed(0), log)
        assert tok.tokenize(feats) == codes                            # the LLM's visual vocabulary is untouched
        changed = any(not torch.equal(v, tok.decoder.state_dict()[k]) for k, v in decoder.items())
        assert changed == tune
        assert (log[-1]["cosine"] is not None) == tune
        assert log[-1]["cross_entropy"] < log[0]["cross_entropy"]
