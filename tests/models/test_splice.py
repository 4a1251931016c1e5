"""Splicing visual tokens into the text embeddings (vlbridge.models.splice and VLBridgeModel.embed).

Each image placeholder id is replaced in place by that image's visual rows (the number of rows may differ
per image); text embeddings stay everywhere else, labels are -100 on visual and padding positions, the
attention mask is 0 only on padding and position ids count real tokens from 0 -- for right (training) and
left (generation) padding. A fake dynamic connector checks that the model splices only the valid rows
given by ``ConnectorOutput.lengths``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from vlbridge.connectors import Connector, ConnectorOutput
from vlbridge.data.dataset import Batch
from vlbridge.data.records import Turn
from vlbridge.data.template import IGNORE_INDEX
from vlbridge.models.splice import splice

IMG = 1          # image placeholder id in the hand-made samples
D = 4


def text_embedding(vocab: int = 32) -> nn.Embedding:
    emb = nn.Embedding(vocab, D)
    with torch.no_grad():                    # row i is (i, i, i, i): every text row is recognisable
        emb.weight.copy_(torch.arange(vocab, dtype=torch.float32)[:, None].expand(vocab, D))
    return emb


def visual_rows(base: float, n: int) -> torch.Tensor:
    """n distinct rows base+0.0, base+1.0, ... (far from every text row)."""
    return (base + torch.arange(n, dtype=torch.float32))[:, None].expand(n, D).clone()


# sample 0: text, image A (3 rows), two text tokens, image B (5 rows), text
# sample 1: text only
IDS = [torch.tensor([5, IMG, 6, 7, IMG, 8]), torch.tensor([9, 10, 11])]
LABELS = [torch.tensor([-100, -100, 6, 7, -100, 8]), torch.tensor([-100, 10, 11])]
VISUAL = [visual_rows(100.0, 3), visual_rows(200.0, 5)]
# the expected real part of each spliced row: ("t", token id, label) or ("v", image, row)
LAYOUT = [
    [("t", 5, -100), ("v", 0, 0), ("v", 0, 1), ("v", 0, 2), ("t", 6, 6), ("t", 7, 7),
     ("v", 1, 0), ("v", 1, 1), ("v", 1, 2), ("v", 1, 3), ("v", 1, 4), ("t", 8, 8)],
    [("t", 9, -100), ("t", 10, 10), ("t", 11, 11)],
]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_splice_places_each_image_where_its_placeholder_was(padding_side):
    emb = text_embedding()
    s = splice(emb, IDS, LABELS, VISUAL, IMG, padding_side=padding_side)
    T = max(len(layout) for layout in LAYOUT)
    assert s.inputs_embeds.shape == (2, T, D)
    for name in ("attention_mask", "position_ids", "labels", "visual_mask"):
        assert getattr(s, name).shape == (2, T), name

    for b, layout in enumerate(LAYOUT):
        n = len(layout)
        real = range(T - n, T) if padding_side == "left" else range(0, n)
        pad = [t for t in range(T) if t not in real]
        for t, item in zip(real, layout):
            kind = item[0]
            if kind == "t":
                _, token, label = item
                torch.testing.assert_close(s.inputs_embeds[b, t], emb.weight[token].detach(), rtol=0, atol=0)
                assert s.labels[b, t] == label
                assert not s.visual_mask[b, t]
            else:
                _, image, row = item
                torch.testing.assert_close(s.inputs_embeds[b, t], VISUAL[image][row], rtol=0, atol=0)
                assert s.labels[b, t] == IGNORE_INDEX
                assert s.visual_mask[b, t]
            assert s.attention_mask[b, t] == 1
        # position ids count the real tokens from 0, wherever the padding is
        assert s.position_ids[b, list(real)].tolist() == list(range(n))
        for t in pad:
            assert s.attention_mask[b, t] == 0
            assert s.labels[b, t] == IGNORE_INDEX
            assert not s.visual_mask[b, t]
        if padding_side == "left" and pad:
            assert max(pad) < min(real)
        if padding_side == "right" and pad:
            assert min(pad) > max(real)
    # sample 1 is padded by exactly the length difference
    assert int(s.attention_mask[1].sum()) == 3 and int(s.attention_mask[0].sum()) == T
    assert int(s.visual_mask.sum()) == 8


def test_splice_left_and_right_padding_agree_on_real_tokens():
    emb = text_embedding()
    right = splice(emb, IDS, LABELS, VISUAL, IMG, padding_side="right")
    left = splice(emb, IDS, LABELS, VISUAL, IMG, padding_side="left")
    for b in range(2):
        r, l = right.attention_mask[b].bool(), left.attention_mask[b].bool()
        assert torch.equal(right.inputs_embeds[b][r], left.inputs_embeds[b][l])
        assert torch.equal(right.labels[b][r], left.labels[b][l])
        assert torch.equal(right.position_ids[b][r], left.position_ids[b][l])


def test_splice_without_labels_and_without_images():
    emb = text_embedding()
    s = splice(emb, [IDS[1], torch.tensor([3, 4])], None, [], IMG)
    assert s.labels is None
    assert not s.visual_mask.any()
    assert s.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    torch.testing.assert_close(s.inputs_embeds[1, :2], emb.weight[[3, 4]].detach())


@pytest.mark.parametrize("visual", [VISUAL[:1], VISUAL + [visual_rows(300.0, 2)], []])
def test_splice_rejects_mismatched_image_counts(visual):
    with pytest.raises(ValueError):
        splice(text_embedding(), IDS, LABELS, visual, IMG)


def test_splice_rejects_images_for_a_text_only_batch():
    with pytest.raises(ValueError):
        splice(text_embedding(), [IDS[1]], None, [visual_rows(100.0, 2)], IMG)


# ----------------------------------------------------------------------------- fake dynamic connector

@dataclass
class FakeOptions:
    lengths: tuple = (2, 4, 3)


class FakeDynamicConnector(Connector):
    """Image i gets lengths[i] rows of value 1000*(i+1)+row; the padding rows are NaN."""

    Options = FakeOptions
    dynamic = True

    def forward(self, feats):
        n = feats.features.shape[0]
        lengths = torch.tensor(self.options.lengths[:n])
        tokens = torch.full((n, max(self.options.lengths), self.llm_dim), float("nan"))
        for i, length in enumerate(lengths.tolist()):
            tokens[i, :length] = (1000.0 * (i + 1) + torch.arange(length, dtype=torch.float32))[:, None]
        # keep the graph connected to the features so a backward pass would still work
        tokens = tokens + 0.0 * feats.features.mean()
        return ConnectorOutput(tokens=tokens, lengths=lengths)

    def num_tokens(self) -> int:
        return max(self.options.lengths)


def test_embed_splices_only_the_valid_rows_of_a_dynamic_connector(tiny_model):
    model = copy.deepcopy(tiny_model)                          # the session fixture is shared
    model.connector = FakeDynamicConnector(FakeOptions(), model.vision.out_dim, model.llm_dim, model.vision.grid)
    assert model.visual_tokens_per_image() == 4
    lengths = FakeOptions().lengths

    turns0 = [Turn("user", "Compare <image> and <image> please."), Turn("assistant", "same")]
    turns1 = [Turn("user", "What is <image>?"), Turn("assistant", "a circle")]
    built = [model.builder.build(turns0), model.builder.build(turns1)]
    ids = [torch.tensor(i) for i, _ in built]
    labels = [torch.tensor(l) for _, l in built]
    size = model.vision.image_size
    pixels = torch.randn(3, 3, size, size)

    for side in ("right", "left"):
        s, _ = model.embed(ids, labels, pixels, padding_side=side)
        assert not torch.isnan(s.inputs_embeds).any()          # the NaN padding rows never get in
        text_emb = model.llm.get_input_embeddings()
        image = 0
        for b in range(2):
            real = s.attention_mask[b].bool()
            row_embeds, row_vis = s.inputs_embeds[b][real], s.visual_mask[b][real]
            expected_len = len(ids[b]) - int((ids[b] == model.image_token_id).sum())
            t = 0
            for token in ids[b].tolist():
                if token == model.image_token_id:
                    n = lengths[image]
                    expect = (1000.0 * (image + 1) + torch.arange(n, dtype=torch.float32))[:, None].expand(n, model.llm_dim)
                    torch.testing.assert_close(row_embeds[t:t + n], expect)
                    assert row_vis[t:t + n].all()
                    t += n
                    expected_len += n
                    image += 1
                else:
                    torch.testing.assert_close(row_embeds[t], text_emb.weight[token].detach())
                    assert not row_vis[t]
                    t += 1
            assert t == len(row_embeds) == expected_len
        assert image == 3

    # and the full forward pass sees no NaN either
    with torch.no_grad():
        out = model(Batch(ids, labels, pixels, [2, 1]))
    assert torch.isfinite(out.loss)
    assert out.n_positions == sum(len(x) for x in ids) - 3 + sum(lengths)


def test_forward_without_padding_mask_scores_each_sample_as_if_alone(tiny_model):
    """Training drops the padding mask (right padding + causal = pads are never seen): each sample's loss in
    a padded batch equals its loss computed alone, with no padding at all."""
    model = tiny_model
    conv = [[Turn("user", "<image>\nWhat color is the circle?"), Turn("assistant", "red")],
            [Turn("user", "<image>\nHow many objects are there? Answer with a long sentence please."),
             Turn("assistant", "There are three objects in the image.")]]
    built = [model.builder.build(t) for t in conv]
    ids = [torch.tensor(i) for i, _ in built]
    labels = [torch.tensor(l) for _, l in built]
    size = model.vision.image_size
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        both = model(Batch(ids, labels, pixels, [1, 1]))
        alone = [model(Batch(ids[i:i + 1], labels[i:i + 1], pixels[i:i + 1], [1])) for i in range(2)]
    assert len(ids[0]) != len(ids[1])                          # the batch really is padded
    torch.testing.assert_close(both.lm_loss_sum, sum(a.lm_loss_sum for a in alone), rtol=1e-5, atol=1e-5)


def test_right_padding_does_not_look_like_packed_sequences():
    """Right pads continue the position count, so transformers sees one sequence per row and, with the padding
    mask dropped, runs its causal kernel rather than building a packed-sequence mask."""
    from transformers.masking_utils import find_packed_sequence_indices
    emb = nn.Embedding(20, 4)
    out = splice(emb, [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([1, 2])], None, [], image_token_id=19,
                 padding_side="right")
    assert out.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert find_packed_sequence_indices(out.position_ids) is None


def test_shared_image_positions_put_each_image_at_one_position():
    emb = torch.nn.Embedding(10, 4)
    ids = [torch.tensor([7, IMG, 2, 3, IMG, 4]), torch.tensor([5, 6])]
    visual = [torch.randn(3, 4), torch.randn(2, 4)]
    seq = splice(emb, ids, None, visual, IMG)
    shared = splice(emb, ids, None, visual, IMG, image_positions="shared")
    assert seq.position_ids[0].tolist() == list(range(9))
    #                                        7  v  v  v  2  3  v  v  4
    assert shared.position_ids[0, :9].tolist() == [0, 1, 1, 1, 2, 3, 4, 4, 5]
    assert shared.position_ids[1, :2].tolist() == [0, 1]                   # text-only row: unchanged
    left = splice(emb, ids, None, visual, IMG, padding_side="left", image_positions="shared")
    assert left.position_ids[0].tolist()[-9:] == [0, 1, 1, 1, 2, 3, 4, 4, 5]
    assert torch.equal(shared.inputs_embeds, seq.inputs_embeds)
    with pytest.raises(ValueError, match="image_positions"):
        splice(emb, ids, None, visual, IMG, image_positions="2d")


def test_training_forward_with_shared_positions_attends_over_the_whole_prefix(tiny_model):
    """With shared image positions the training forward must still be one causal sequence per sample: its
    logits equal a forward with the explicit mask, and the answer depends on every visual token (transformers
    would read the repeated position ids as packed-sequence boundaries if no mask were given)."""
    model = copy.deepcopy(tiny_model).eval()
    model.cfg.llm.image_positions = "shared"
    with torch.no_grad():
        for p in model.llm.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    ids, labels = model.builder.build([Turn("user", "<image>\nWhat color is the circle?"), Turn("assistant", "red")])
    batch = Batch([torch.tensor(ids)], [torch.tensor(labels)],
                  torch.randn(1, 3, model.vision.image_size, model.vision.image_size), [1])
    with torch.no_grad():
        out = model(batch, return_logits=True)
        s, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
        ref = model.llm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask,
                        position_ids=s.position_ids).logits
        torch.testing.assert_close(out.logits, ref)
        first_visual = int(s.visual_mask[0].nonzero()[0])
        embeds = s.inputs_embeds.clone()
        embeds[0, first_visual] += 1.0                            # change only the FIRST visual token
        moved = model.llm(inputs_embeds=embeds, attention_mask=s.attention_mask, position_ids=s.position_ids).logits
    assert not torch.allclose(moved[0, -1], ref[0, -1])
