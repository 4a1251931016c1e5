"""Region proposer: target assignment by hand, loss at a perfect prediction, overfitting sanity, recall@K."""
import pytest
import torch

from vlbridge.grounding.proposer import (DenseOutput, DenseProposer, assign_targets, cell_centres, proposer_loss,
                                         recall_at_k)


def test_cells_inside_a_box_are_positive_and_the_smallest_box_wins() -> None:
    centres = cell_centres(4, 4)                                     # centres at 0.125, 0.375, 0.625, 0.875
    gt = torch.tensor([[0.0, 0.0, 0.75, 0.75], [0.25, 0.25, 0.5, 0.5]])
    match, quality = assign_targets(centres, (4, 4), gt)
    grid = match.view(4, 4)
    assert grid[:3, :3].eq(0).sum() == 8 and grid[1, 1] == 1        # the small box owns the cell it contains
    assert grid[3].eq(-1).all() and grid[:, 3].eq(-1).all()          # outside both boxes: background
    # centerness of cell (0, 0) for box 0: l = t = 0.125, r = b = 0.625 -> sqrt(0.2 * 0.2) = 0.2
    assert float(quality[0]) == pytest.approx(0.2)
    assert float(quality.view(4, 4)[1, 1]) == pytest.approx(1.0)     # the small box is centred on its cell
    assert (quality[match < 0] == 0).all()


def test_a_box_smaller_than_a_cell_still_gets_its_centre_cell() -> None:
    match, quality = assign_targets(cell_centres(4, 4), (4, 4), torch.tensor([[0.52, 0.52, 0.6, 0.6]]))
    assert match.tolist().count(0) == 1 and int(match.view(4, 4)[2, 2]) == 0 and float(quality.max()) > 0


def test_perfect_boxes_have_zero_box_loss_and_confident_scores_low_loss() -> None:
    centres = cell_centres(4, 4)
    gt = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    match, quality = assign_targets(centres, (4, 4), gt)
    boxes = gt.expand(16, 4)[None].clone()                           # every cell predicts the true box
    logit_of = lambda q: torch.log(q.clamp(1e-6, 1 - 1e-6) / (1 - q).clamp(1e-6))   # noqa: E731
    perfect = DenseOutput(logit_of(quality)[None], boxes, centres, (4, 4))
    losses = proposer_loss(perfect, [gt])
    assert float(losses["l1"]) == pytest.approx(0, abs=1e-6) and float(losses["giou"]) == pytest.approx(0, abs=1e-6)
    wrong = DenseOutput(-logit_of(quality)[None], boxes + 0.1, centres, (4, 4))
    worse = proposer_loss(wrong, [gt])
    assert all(float(worse[k]) > float(losses[k]) for k in ("score", "l1", "giou"))


def test_proposer_overfits_two_images_and_recalls_their_boxes() -> None:
    torch.manual_seed(0)
    maps = [torch.randn(2, 8, 8, 8)]                                  # features of two "images", one level
    gt = [torch.tensor([[0.1, 0.1, 0.4, 0.45], [0.6, 0.5, 0.95, 0.9]]), torch.tensor([[0.3, 0.2, 0.7, 0.6]])]
    head = DenseProposer([8], dim=16, convs=1)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    first = None
    for _ in range(60):
        loss = sum(proposer_loss(head(maps), gt).values())
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first
    kept = [b for b, _ in head.propose(head(maps), score_threshold=0.15, iou_threshold=0.6, top_k=4)]
    assert recall_at_k(kept, gt, [4])["recall@4"] == 1.0


def test_recall_at_k_by_hand() -> None:
    props = [torch.tensor([[0, 0, .5, .5], [.5, .5, 1, 1]]), torch.zeros(0, 4)]
    gt = [torch.tensor([[.5, .5, 1, 1], [0, 0, .1, .1]]), torch.tensor([[0, 0, 1, 1]])]
    r = recall_at_k(props, gt, [1, 2])
    assert r["recall@1"] == 0 and r["recall@2"] == pytest.approx(1 / 3)
    assert r["mean_best_iou"] == pytest.approx((1 + 0.04 + 0) / 3) and r["mean_kept"] == 1
