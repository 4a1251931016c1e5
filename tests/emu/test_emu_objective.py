"""Emu's regression objective: alignment of predictions and targets in a spliced sequence, the [/IMG] label,
lambda = 0 against the plain next-token loss, the collapse guard, and the pool variant."""
from __future__ import annotations

import copy

import pytest
import torch

from support import emu_config
from vlbridge.connectors import TrainingCollapse
from vlbridge.connectors.emu import IMG_CLOSE, IMG_OPEN
from vlbridge.emu.regression import image_share
from vlbridge.data.dataset import Batch
from vlbridge.data.records import Turn, load_records
from vlbridge.data.template import IGNORE_INDEX
from vlbridge.models.vlm import VLBridgeModel


@pytest.fixture(scope="module")
def texts(shapes_dir):
    return [t.text for r in load_records(shapes_dir / "train.json") for t in r.turns] + ["Answer: red", "a red circle"]


def emu_model(tiny_model, **options) -> VLBridgeModel:
    torch.manual_seed(0)
    return VLBridgeModel(emu_config(**options), copy.deepcopy(tiny_model.tokenizer))


def document_batch(model, text: str = "a red circle\n<image>\nAnswer: red <image> end", n_images: int = 2) -> Batch:
    ids, labels = model.builder.build([Turn("document", text)])
    g = torch.Generator().manual_seed(1)
    return Batch([torch.tensor(ids)], [torch.tensor(labels)], torch.randn(n_images, 3, 32, 32, generator=g), [n_images])


def test_produced_images_are_wrapped_their_end_supervised_and_their_slots_known(tiny_model):
    model = emu_model(tiny_model).eval()
    batch = document_batch(model)
    s, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
    M = model.connector.num_tokens()
    open_id, close_id = model.tokenizer.convert_tokens_to_ids([IMG_OPEN, IMG_CLOSE])
    table = model.llm.get_input_embeddings().weight
    tokens = s.connector_output.per_image()
    assert len(s.slots) == 2 and all(slot.produced and slot.length == M + 2 for slot in s.slots)
    for slot, visual in zip(s.slots, tokens):
        row, start = slot.row, slot.start
        assert torch.equal(s.inputs_embeds[row, start], table[open_id])             # [IMG]
        assert torch.equal(s.inputs_embeds[row, start + 1:start + 1 + M], visual)   # the M embeddings
        assert torch.equal(s.inputs_embeds[row, start + M + 1], table[close_id])    # [/IMG]
        assert (s.labels[row, start:start + M + 1] == IGNORE_INDEX).all()           # regressed, not CE
        assert s.labels[row, start + M + 1] == close_id                             # the last embedding -> [/IMG]


def test_an_image_in_a_user_turn_is_read_not_produced(tiny_model):
    model = emu_model(tiny_model).eval()
    ids, labels = model.builder.build([Turn("user", "<image>\nWhat is it?"), Turn("assistant", "A circle.")])
    s, _ = model.embed([torch.tensor(ids)], [torch.tensor(labels)], torch.randn(1, 3, 32, 32))
    assert [slot.produced for slot in s.slots] == [False]
    slot = s.slots[0]
    assert (s.labels[0, slot.start:slot.start + slot.length] == IGNORE_INDEX).all()
    out = model(Batch([torch.tensor(ids)], [torch.tensor(labels)], torch.randn(1, 3, 32, 32), [1]))
    assert out.aux_losses == {} and out.stats == {}                                 # nothing to regress
    ids, labels = model.builder.build([Turn("user", "Draw a red circle."), Turn("assistant", "<image>")])
    s, _ = model.embed([torch.tensor(ids)], [torch.tensor(labels)], torch.randn(1, 3, 32, 32))
    assert [slot.produced for slot in s.slots] == [True]                             # an assistant's image is


def test_position_i_is_scored_against_embedding_i_plus_1(tiny_model):
    """A hand-made sequence: the hidden state at [IMG] holds e_1, at e_i holds e_{i+1}, and the head is the
    identity: the loss is 0. The same states one position later (each position predicting its own embedding)
    or one earlier score > 0, so a misaligned objective fails."""
    model = emu_model(tiny_model).train()
    conn = model.connector
    with torch.no_grad():
        conn.regression.weight.copy_(torch.eye(model.llm_dim))
    batch = document_batch(model)
    s, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
    M, targets = conn.num_tokens(), [t.detach() for t in s.connector_output.per_image()]
    ctx = model.sequence_context()

    def loss_with(shift: int) -> float:
        hidden = torch.zeros_like(s.inputs_embeds)
        for slot, t in zip(s.slots, targets):
            hidden[slot.row, slot.start + shift:slot.start + shift + M] = t          # states holding e_1 .. e_M
        return conn.hidden_objective(hidden, s.slots, targets, ctx).stats["regression"]

    assert loss_with(0) == pytest.approx(0.0, abs=1e-12)
    assert loss_with(1) > 1e-4 and loss_with(-1) > 1e-4


def test_lambda_zero_equals_the_plain_next_token_model(tiny_model):
    """With regression_weight 0 the loss and every gradient equal those of the same model without the objective;
    with weight 1 they differ (so the comparison can fail)."""
    def loss_and_grads(weight: float, objective: bool):
        model = emu_model(tiny_model, regression_weight=weight).train()
        if not objective:
            model.connector.uses_hidden_states = False
        out = model(document_batch(model))
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = loss_and_grads(0.0, objective=False)
    zero, zero_grads = loss_and_grads(0.0, objective=True)
    one, one_grads = loss_and_grads(1.0, objective=True)
    assert "target_var" in zero.stats and "regression" not in zero.aux_losses
    assert torch.equal(zero.loss, plain.loss) and zero_grads.keys() == plain_grads.keys()
    assert all(torch.equal(zero_grads[n], plain_grads[n]) for n in plain_grads)
    assert one.loss > plain.loss and "regression" in one.aux_losses
    assert not torch.equal(one_grads["connector.former.proj.weight"], plain_grads["connector.former.proj.weight"])
    assert "connector.regression.weight" in one_grads and "connector.regression.weight" not in plain_grads
    assert not all(torch.equal(one_grads[n], plain_grads[n]) for n in plain_grads if n.startswith("llm."))


def test_full_logits_path_gives_the_same_objective(tiny_model):
    model = emu_model(tiny_model).train()
    batch = document_batch(model)
    torch.manual_seed(0)
    sparse = model(batch)
    dense = model(batch, return_logits=True)
    assert sparse.stats["regression"] == pytest.approx(dense.stats["regression"], rel=1e-5)
    assert sparse.loss.item() == pytest.approx(dense.loss.item(), rel=1e-5)


def test_image_share_sees_embeddings_that_ignore_the_image():
    g = torch.Generator().manual_seed(0)
    per_index = torch.randn(1, 6, 8, generator=g).expand(5, 6, 8)          # the same 6 embeddings for 5 images
    assert image_share(per_index) == pytest.approx(0.0, abs=1e-6)
    assert image_share(per_index + 1e-3 * torch.randn(5, 6, 8, generator=g)) < 1e-4
    assert image_share(torch.randn(5, 6, 8, generator=g)) > 0.5              # images differ, indices do not
    assert image_share(per_index[:1]) is None                               # one image says nothing


def test_collapse_guard_stops_targets_that_ignore_the_image(tiny_model):
    model = emu_model(tiny_model, detach_targets=False, collapse_patience=2).train()
    batch = document_batch(model)
    out = model(batch)                                              # healthy targets: no complaint
    assert out.stats["target_image_share"] > 0.01
    with torch.no_grad():
        model.connector.former.proj.weight.zero_()                  # every image's embeddings = the bias
    model(batch)                                                    # first collapsed batch: counted
    with pytest.raises(TrainingCollapse, match="collapsed.*same embeddings for every image"):
        model(batch)
    model.eval()
    model.connector.guard.run = 0
    model(batch)                                                    # evaluation never stops a run
    model.train()
    model.connector.set_objective(collapse_ratio=0.0)               # the guard switched off
    for _ in range(3):
        model(batch)


def test_objective_options_change_without_touching_weights(tiny_model, tmp_path):
    from vlbridge.recipes.emu.prepare import prepare
    model = emu_model(tiny_model, regression_weight=0.0)
    model.save_pretrained(tmp_path / "plain")
    prepare(tmp_path / "plain", tmp_path / "init", {"regression_weight": 2.0, "regression_loss": "cosine"})
    init = VLBridgeModel.from_pretrained(tmp_path / "init")
    assert init.connector.options.regression_weight == 2.0 and init.connector.options.regression_loss == "cosine"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), init.state_dict().values()))
    with pytest.raises(ValueError, match="not objective options"):
        init.connector.set_objective(num_queries=8)


def test_generate_stage_freezes_the_connector_but_its_head(tiny_model):
    from vlbridge.config import TrainConfig
    from vlbridge.train.stages import apply_stage, resolve_stage
    model = emu_model(tiny_model)
    apply_stage(model, resolve_stage(model.connector, TrainConfig(stage="generate")))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "connector.regression.weight" in trained and any(n.startswith("llm.") for n in trained)
    assert not any(n.startswith(("connector.former", "connector.decoder", "vision.")) for n in trained)
    apply_stage(model, resolve_stage(model.connector, TrainConfig(stage="instruct")))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("connector.former") for n in trained)
    assert not any(n.startswith("connector.decoder") for n in trained)


def test_pool_variant_averages_the_grid(tiny_model):
    model = emu_model(tiny_model, pool=True, num_queries=4).eval()
    pixels = torch.randn(2, 3, 32, 32)
    feats = model.vision(pixels)
    out = model.connector(feats)
    rows, cols = feats.grid                                          # 4 x 4 patches -> 2 x 2 pooled
    grid = feats.features.view(2, rows, cols, -1)
    first = grid[:, :2, :2].mean((1, 2))                             # the top-left 2 x 2 block
    assert out.tokens.shape == (2, 4, model.llm_dim)
    assert torch.allclose(out.tokens[:, 0], model.connector.proj(first), atol=1e-6)
    with pytest.raises(ValueError, match="square number"):
        emu_model(tiny_model, pool=True, num_queries=3)


def test_input_noise_touches_only_produced_images_in_training(tiny_model):
    model = emu_model(tiny_model, input_noise=0.5)
    ids, labels = model.builder.build([Turn("user", "<image>\nDraw it again."), Turn("assistant", "<image>")])
    batch = Batch([torch.tensor(ids)], [torch.tensor(labels)], torch.randn(2, 3, 32, 32), [2])

    def entries(training: bool):
        model.train(training)
        torch.manual_seed(0)
        s, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
        return s, [s.inputs_embeds[0, slot.start:slot.start + slot.length] for slot in s.slots]

    (s_eval, clean), (s_train, noisy) = entries(False), entries(True)
    assert [slot.produced for slot in s_train.slots] == [False, True]
    assert torch.equal(clean[0], noisy[0])                                      # the read image: as it was
    assert torch.equal(clean[1][[0, -1]], noisy[1][[0, -1]])                    # [IMG], [/IMG] untouched
    assert not torch.allclose(clean[1][1:-1], noisy[1][1:-1])                   # the produced one's embeddings
    assert torch.equal(s_train.connector_output.tokens[1], s_eval.connector_output.tokens[1])   # clean targets
