"""LM loss weighting by answer length: token (LLaVA), sqrt (InternVL 2.5 square averaging), answer."""
from __future__ import annotations

import pytest
import torch

from vlbridge.models.loss_weights import answer_weights

I = -100


def test_runs_are_answers():
    labels = torch.tensor([I, 5, 6, 7, 8, I, I, 9, I, 3, 4])        # answers of 4, 1 and 2 tokens
    assert answer_weights(labels, "token").tolist() == [0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1]
    w = answer_weights(labels, "answer")
    assert w[1:5].tolist() == [0.25] * 4 and w[7] == 1.0 and w[9:].tolist() == [0.5, 0.5]
    assert float(w.sum()) == pytest.approx(3.0)                      # every answer counts once
    s = answer_weights(labels, "sqrt")
    assert s[1:5].tolist() == [0.5] * 4 and s[7] == 1.0 and s[9:].tolist() == pytest.approx([0.5 ** 0.5] * 2)
    assert float(s[labels == I].abs().sum()) == 0


def test_batched_rows_are_independent():
    rows = torch.tensor([[I, 1, 1, I], [2, 2, 2, 2]])
    w = answer_weights(rows, "answer")
    assert w[0].tolist() == [0, 0.5, 0.5, 0] and w[1].tolist() == [0.25] * 4


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="sqrt"):
        answer_weights(torch.tensor([I, 1]), "mean")


def test_trainer_normaliser_matches_model_weights(tiny_model, shapes_dir):
    """The trainer's per-step normaliser equals the weights the model applies (so accumulation is exact)."""
    from vlbridge.config import DataConfig
    from vlbridge.data.dataset import collate
    from vlbridge.data.records import SkipReport
    from vlbridge.train.data import load_split, make_dataset
    from vlbridge.train.trainer import loss_weight_total
    cfg = DataConfig(path=str(shapes_dir))
    ds = make_dataset(load_split(shapes_dir / "train.json", cfg, SkipReport())[:4], tiny_model, cfg, SkipReport())
    batch = collate([ds[i] for i in range(4)])
    for mode in ("token", "sqrt", "answer"):
        out = tiny_model(batch, loss_weighting=mode)
        assert out.weight_sum == pytest.approx(loss_weight_total(batch, mode))
        if mode == "answer":   # 8-turn records: one unit of weight per answer
            assert out.weight_sum == pytest.approx(sum(len(r.turns) // 2 for r in batch.records))
