"""Emu's visual decoders: shapes, the palette decoder learning one image from its embeddings, seeded flow sampling."""
from __future__ import annotations

import pytest
import torch

from vlbridge.emu.flow_decoder import FlowDecoder
from vlbridge.emu.palette_decoder import PaletteDecoder, feature_loss

COMMON = dict(llm_dim=12, num_tokens=3, grid=(4, 4), image_size=16, dim=16, layers=1, heads=2, feature_dim=8)


def scene(n: int = 2) -> torch.Tensor:
    """Flat-colour images [n, 3, 16, 16]: a dark background with a coloured square each."""
    img = torch.full((n, 3, 16, 16), 0.1)
    img[0, :, 2:8, 3:9] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[1, :, 8:14, 6:12] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    return img


def test_palette_decoder_learns_features_and_pixels_apart():
    """The renderer learns to draw real features; to_grid learns to predict them from the embeddings; together
    they paint the embeddings' images."""
    torch.manual_seed(0)
    dec = PaletteDecoder(channels=[8, 8], palette=4, **COMMON)
    pixels, emb, feats = scene(), torch.randn(2, 3, 12), torch.randn(2, 16, 8)
    dec.prepare(pixels)
    for params, loss_fn in ((dec.renderer.parameters(), lambda: dec.render_loss(feats, pixels)),
                            (dec.to_grid.parameters(), lambda: feature_loss(dec.to_grid(emb), feats))):
        opt = torch.optim.Adam(params, lr=1e-2)
        first = loss_fn().item()
        for _ in range(80):
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < first / 2
    with torch.no_grad():
        out = dec.eval()(emb)
    assert out.shape == (2, 3, 16, 16) and (out - pixels).abs().mean() < 0.05      # it paints both scenes


def test_flow_decoder_samples_from_seeded_noise():
    torch.manual_seed(0)
    dec = FlowDecoder(channels=[8, 8], steps=3, **COMMON).eval()
    emb = torch.randn(2, 3, 12)
    with torch.no_grad():
        a, b, c = (dec(emb, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    loss = dec.render_loss(torch.randn(2, 16, 8), scene(), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0 and dec.renderer.head.weight.grad is not None and dec.to_grid.queries.grad is None


def test_decoders_refuse_a_grid_that_cannot_reach_the_image():
    with pytest.raises(ValueError):
        PaletteDecoder(channels=[8], **COMMON)
    with pytest.raises(ValueError, match="flow decoder"):
        FlowDecoder(channels=[8], **COMMON)
