"""RoIAlign on corner boxes against hand-computed bilinear samples and axis-aligned crops; box operations."""
import pytest
import torch

from vlbridge.grounding.box_ops import box_iou, generalized_iou, nms, select_proposals
from vlbridge.data.boxes import box_iou as scalar_iou
from vlbridge.grounding.roi_align import roi_align


def bilinear(m: torch.Tensor, x: float, y: float) -> float:
    """Hand bilinear sample of a [H, W] map at pixel-index coordinates (x, y) (pixel centres at integers)."""
    x0, y0 = int(x // 1), int(y // 1)
    fx, fy = x - x0, y - y0
    return float((1 - fx) * (1 - fy) * m[y0, x0] + fx * (1 - fy) * m[y0, x0 + 1]
                 + (1 - fx) * fy * m[y0 + 1, x0] + fx * fy * m[y0 + 1, x0 + 1])


def test_single_sample_is_the_hand_computed_bilinear_value() -> None:
    m = torch.tensor([[1., 2., 3., 4.], [5., 7., 11., 13.], [17., 19., 23., 29.], [31., 37., 41., 43.]])
    # box x in [0.25, 0.6], y in [0.3, 0.8] of a 4x4 map: centre at (1.7, 2.2) pixel units = index (1.2, 1.7)
    out = roi_align(m[None, None], [torch.tensor([[0.25, 0.3, 0.6, 0.8]])], output_size=1, sampling_ratio=1)
    assert out.shape == (1, 1, 1, 1)
    # by hand: weights (0.8, 0.2) on columns 1, 2 and (0.3, 0.7) on rows 1, 2
    hand = 0.3 * (0.8 * 7 + 0.2 * 11) + 0.7 * (0.8 * 19 + 0.2 * 23)
    assert float(out) == pytest.approx(hand, abs=1e-5)
    assert float(out) == pytest.approx(bilinear(m, 1.2, 1.7), abs=1e-5)


def test_bins_average_their_sampling_points() -> None:
    torch.manual_seed(0)
    m = torch.rand(6, 8)
    box = [0.1, 0.2, 0.7, 0.9]                                      # x over 8 columns, y over 6 rows
    out = roi_align(m[None, None], [torch.tensor([box])], output_size=(2, 3), sampling_ratio=2)[0, 0]
    for i in range(2):
        for j in range(3):
            pts = []
            for ky in range(2):
                for kx in range(2):
                    u = (box[0] + (box[2] - box[0]) * (j + (kx + 0.5) / 2) / 3) * 8   # pixel-edge units
                    v = (box[1] + (box[3] - box[1]) * (i + (ky + 0.5) / 2) / 2) * 6
                    pts.append(bilinear(m, u - 0.5, v - 0.5))
            assert float(out[i, j]) == pytest.approx(sum(pts) / 4, abs=1e-5)


def test_axis_aligned_box_crops_exact_pixels() -> None:
    torch.manual_seed(1)
    m = torch.rand(2, 8, 8)
    # pixels x 2..5, y 4..7 (corner box in pixel edges: [2, 4, 6, 8] / 8): one bin per pixel
    out = roi_align(m[None], [torch.tensor([[2 / 8, 4 / 8, 6 / 8, 8 / 8]])], output_size=(4, 4), sampling_ratio=1)
    assert torch.allclose(out[0], m[:, 4:8, 2:6], atol=1e-6)


def test_corner_boxes_not_centre_format() -> None:
    """The upstream bug fed (cx, cy, w, h): a corner box of the top-left quadrant must read that quadrant."""
    m = torch.zeros(4, 4)
    m[:2, :2] = 1.0                                                 # only the top-left quadrant is lit
    quadrant = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    out = roi_align(m[None, None], [quadrant], output_size=2, sampling_ratio=1)
    assert torch.allclose(out, torch.ones(1, 1, 2, 2))
    # the same quadrant in (cx, cy, w, h) = (0.25, 0.25, 0.5, 0.5), read as corners, is another region
    wrong = roi_align(m[None, None], [torch.tensor([[0.25, 0.25, 0.5, 0.5]])], output_size=2, sampling_ratio=1)
    assert not torch.allclose(wrong, out)


def test_boxes_go_to_their_own_image_and_levels_of_any_size() -> None:
    a, b = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    out = roi_align(torch.stack([a, b]), [torch.tensor([[0, 0, 1, 1.]]), torch.tensor([[0, 0, .5, .5], [.5, .5, 1, 1.]])], 2)
    assert out.shape == (3, 1, 2, 2) and float(out[0].sum()) == 0 and float(out[1:].mean()) == 1
    big = torch.rand(1, 3, 16, 16)                                  # same box on a finer map
    assert roi_align(big, [torch.tensor([[0.1, 0.2, 0.3, 0.4]])], 3).shape == (1, 3, 3, 3)
    assert roi_align(big, [torch.zeros(0, 4)], 3).shape == (0, 3, 3, 3)


def test_pairwise_iou_matches_scalar_iou_and_giou_hand_values() -> None:
    a = torch.tensor([[0, 0, .5, .5], [.25, 0, .75, .5]])
    b = torch.tensor([[0, 0, .5, .5], [.5, .5, 1, 1], [.2, .1, .9, .6]])
    iou = box_iou(a, b)
    for i in range(2):
        for j in range(3):
            assert float(iou[i, j]) == pytest.approx(scalar_iou(a[i].tolist(), b[j].tolist()), abs=1e-6)
    # disjoint unit squares side by side at distance 1: IoU 0, hull 3, union 2 -> GIoU = -1/3
    g = generalized_iou(torch.tensor([[0., 0, 1, 1]]), torch.tensor([[2., 0, 3, 1]]))
    assert float(g) == pytest.approx(-1 / 3)
    assert float(generalized_iou(a[:1], a[:1])) == pytest.approx(1.0)


def test_nms_and_selection() -> None:
    boxes = torch.tensor([[0, 0, .5, .5], [0, 0, .5, .45], [.6, .6, .9, .9], [0, 0, .52, .5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = nms(boxes, scores, 0.6)
    assert keep.tolist() == [3, 2]                                   # 0 and 1 overlap 3 by > 0.6
    kept, s = select_proposals(boxes, scores, score_threshold=0.75, iou_threshold=0.6, top_k=5)
    assert s.tolist() == pytest.approx([0.95])                      # 0.7 is below the threshold
    kept, s = select_proposals(boxes, torch.full((4,), 0.01), 0.5, 0.6, 5)
    assert len(kept) == 1                                           # none passes: keep the best one
