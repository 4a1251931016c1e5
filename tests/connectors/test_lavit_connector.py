"""The `lavit` connector inside VLBridgeModel: vocabulary extension, [IMG] ... [/IMG] wrapping of variable
visual tokens, frozen vs trainable tokenizer, and save/load of the extended model and of the tokenizer."""
from __future__ import annotations

import copy

import pytest
import torch

from vlbridge.data.dataset import InstructionDataset, collate
from vlbridge.data.records import SkipReport, load_records
from vlbridge.lavit.visual_tokenizer import DynamicVisualTokenizer
from vlbridge.lavit.vocabulary import IMG_CLOSE, IMG_OPEN, VisualVocab, image_text
from vlbridge.models.build import build_model
from vlbridge.models.vlm import VLBridgeModel

from support import tiny_model_config

OPTIONS = {"codebook_size": 16, "image_size": 32, "heads": 2, "merger_layers": 1, "decoder_layers": 1,
           "pixel_channels": [16, 8, 8]}


@pytest.fixture(scope="module")
def records(shapes_dir):
    return load_records(shapes_dir / "train.json")


@pytest.fixture(scope="module")
def model(records):
    torch.manual_seed(0)
    texts = [t.text for r in records for t in r.turns]
    return build_model(tiny_model_config("lavit", OPTIONS), texts).eval()


def batch_of(model, records, n=3):
    ds = InstructionDataset(records[:n], model.builder, model.vision.image_transform(), 512,
                            model.visual_tokens_per_image(), SkipReport(), on_error="raise")
    return collate([ds[i] for i in range(n)])


def test_vocabulary_is_extended_with_contiguous_code_ids(model):
    vocab = VisualVocab.from_model(model)
    assert vocab.size == 16 and len(set(vocab.code_ids())) == 16
    assert model.llm.get_input_embeddings().num_embeddings >= len(model.tokenizer)
    assert max(vocab.code_ids()) < len(model.tokenizer)
    text = image_text([3, 0, 15])
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    assert ids == [vocab.open_id] + vocab.to_ids([3, 0, 15]) + [vocab.close_id]
    assert vocab.to_codes(ids) == [3, 0, 15]


def test_images_are_wrapped_in_img_tokens_with_variable_length(model, records):
    batch = batch_of(model, records)
    out = model.encode_images(batch.pixel_values)
    lengths = out.lengths.tolist()
    assert all(1 <= n <= 16 for n in lengths)
    s, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
    emb = model.llm.get_input_embeddings().weight
    open_id, close_id = model.tokenizer.convert_tokens_to_ids([IMG_OPEN, IMG_CLOSE])
    for b, ids in enumerate(batch.input_ids):
        assert int(s.attention_mask[b].sum()) == len(ids) - 1 + lengths[b] + 2
        assert int(s.visual_mask[b].sum()) == lengths[b] + 2
        where = s.visual_mask[b].nonzero().flatten()
        assert torch.allclose(s.inputs_embeds[b, where[0]], emb[open_id])
        assert torch.allclose(s.inputs_embeds[b, where[-1]], emb[close_id])
        inner = s.inputs_embeds[b, where[1:-1]]
        assert torch.allclose(inner, out.per_image()[b], atol=1e-6)
    assert model.visual_tokens_per_image() == 16 + 2


def test_frozen_tokenizer_gets_no_gradient(model, records):
    batch = batch_of(model, records)
    model.train()
    model.zero_grad()
    out = model(batch)
    out.loss.backward()
    model.eval()
    assert not out.aux_losses
    assert all(p.grad is None for p in model.connector.visual_tokenizer.parameters())
    assert all(p.grad is not None for p in model.connector.proj.parameters())


def test_train_merger_learns_through_the_llm_selector_stays_frozen(records):
    torch.manual_seed(0)
    texts = [t.text for r in records for t in r.turns]
    m = build_model(tiny_model_config("lavit", {**OPTIONS, "train_merger": True}), texts).train()
    out = m(batch_of(m, records))
    assert not out.aux_losses
    out.loss.backward()
    tok = m.connector.visual_tokenizer
    assert tok.merger.blocks[0].self_attn.q.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tok.selector.parameters())
    assert all(p.grad is None for p in tok.decoder.parameters())


@pytest.mark.parametrize("train_merger", [False, True])
def test_llm_stage_trains_only_the_projection_and_optionally_the_merger(records, train_merger):
    from vlbridge.config import TrainConfig
    from vlbridge.train.stages import apply_stage, resolve_stage

    m = build_model(tiny_model_config("lavit", {**OPTIONS, "train_merger": train_merger}),
                    [t.text for r in records for t in r.turns])
    counts = apply_stage(m, resolve_stage(m.connector, TrainConfig(stage="instruct", train_vision=False)))
    tok, conn = m.connector.visual_tokenizer, m.connector
    expected = sum(p.numel() for p in conn.proj.parameters())
    if train_merger:
        expected += sum(p.numel() for p in [*tok.merger.parameters(), *tok.inp.parameters()])
    assert counts["connector"][0] == expected < counts["connector"][1]
    for part in (tok.selector, tok.quantizer, tok.decoder, tok.pixel_decoder):
        assert not any(p.requires_grad for p in part.parameters())
    assert all(p.requires_grad == train_merger for p in tok.merger.parameters())


def test_extended_model_save_load_roundtrip(model, records, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = VLBridgeModel.from_pretrained(tmp_path / "m")
    assert len(loaded.tokenizer) == len(model.tokenizer)
    assert VisualVocab.from_model(loaded) == VisualVocab.from_model(model)
    batch = batch_of(model, records)
    with torch.no_grad():
        a, b = model(batch, return_logits=True), loaded(batch, return_logits=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.equal(loaded.connector.visual_tokenizer.quantizer.codebook,
                       model.connector.visual_tokenizer.quantizer.codebook)


def test_tokenizer_save_load_roundtrip(model, records, tmp_path):
    tok = model.connector.visual_tokenizer
    tok.save(tmp_path / "tok", extra={"note": "test"})
    again = DynamicVisualTokenizer.load(tmp_path / "tok")
    feats = model.vision(batch_of(model, records).pixel_values).features
    codes = tok.tokenize(feats)
    assert again.tokenize(feats) == codes
    assert torch.allclose(again.render(again.decode_ids(codes)), tok.render(tok.decode_ids(codes)), atol=1e-6)
    with pytest.raises(ValueError, match="code ids must lie"):
        tok.decode_ids([[16]])
    with pytest.raises(FileNotFoundError, match="not a LaVIT tokenizer"):
        DynamicVisualTokenizer.load(tmp_path)


def test_a_model_built_with_a_tokenizer_dir_starts_from_that_tokenizer(model, records, tmp_path):
    """``tokenizer`` in the connector options: a new model loads those weights; other options are refused."""
    tok = copy.deepcopy(model.connector.visual_tokenizer)
    with torch.no_grad():
        tok.quantizer.codebook.add_(1.0)                    # differs from any fresh initialisation
    tok.save(tmp_path / "tok")
    texts = [t.text for r in records for t in r.turns]
    built = build_model(tiny_model_config("lavit", {**OPTIONS, "tokenizer": str(tmp_path / "tok")}), texts)
    trained = tok.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in built.connector.visual_tokenizer.state_dict().items())
    with pytest.raises(ValueError, match=r"codebook_size=16/32"):
        build_model(tiny_model_config("lavit", {**OPTIONS, "codebook_size": 32, "tokenizer": str(tmp_path / "tok")}),
                    texts)
    with pytest.raises(FileNotFoundError, match="not a LaVIT tokenizer"):
        build_model(tiny_model_config("lavit", {**OPTIONS, "tokenizer": str(tmp_path)}), texts)


def test_code_embeddings_from_the_codebook_keep_its_geometry(model):
    """prepare --code_embeddings codebook: code tokens' embeddings have the codebook's cosine similarities, at
    the text embeddings' scale; other tokens are untouched."""
    from vlbridge.recipes.lavit.prepare import init_code_embeddings
    m = copy.deepcopy(model)
    before = m.llm.get_input_embeddings().weight.clone()
    init_code_embeddings(m, torch.Generator().manual_seed(0))
    weight = m.llm.get_input_embeddings().weight
    ids = list(VisualVocab.from_model(m).code_ids())
    codes = weight[ids]
    codebook = m.connector.visual_tokenizer.quantizer.codebook
    cos = torch.nn.functional.normalize(codes, dim=-1)
    assert torch.allclose(cos @ cos.T, codebook @ codebook.T, atol=1e-4)
    others = [i for i in range(len(weight)) if i not in set(ids)]
    assert torch.equal(weight[others], before[others])
    assert torch.allclose(codes.norm(dim=-1).mean(), before[others].norm(dim=-1).mean(), rtol=1e-4)
