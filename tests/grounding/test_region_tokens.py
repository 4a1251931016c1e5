"""Region-token text interface: box spans, rewriting to <roi><rj></roi>, box recovery, the region list."""
import pytest
import torch

from vlbridge.data.records import Turn
from vlbridge.data.template import IGNORE_INDEX
from vlbridge.data.boxes import format_box
from vlbridge.grounding.region_list import build_region_list
from vlbridge.grounding.region_tokens import boxes_to_text, find_spans, rewrite


@pytest.fixture(scope="module")
def groma(groma_model):
    return groma_model


def test_builder_writes_boxes_as_roi_spans_and_spans_read_them_back(groma) -> None:
    ids_cfg = groma.connector.token_ids(groma.tokenizer)
    turns = [Turn("user", "<image>\nWhat is the object at [0.1, 0.2, 0.35, 0.5]?"),
             Turn("assistant", "a small red circle"),
             Turn("user", "Give the bounding box of the blue square."), Turn("assistant", "[0.500,0.500,0.750,0.875]")]
    ids, labels = groma.builder.build(turns)
    assert ids.count(ids_cfg.roi) == 2 and ids.count(ids_cfg.roi_end) == 2
    spans = find_spans(ids, labels, ids_cfg, groma.tokenizer.decode)
    assert [s.box for s in spans] == [(0.1, 0.2, 0.35, 0.5), (0.5, 0.5, 0.75, 0.875)]
    assert [s.answer for s in spans] == [False, True]
    assert all(labels[i] != IGNORE_INDEX for i in range(spans[1].start, spans[1].end))


def test_rewrite_answer_and_user_spans(groma) -> None:
    ids_cfg = groma.connector.token_ids(groma.tokenizer)
    turns = [Turn("user", "<image>\nWhat is at [0.1,0.2,0.3,0.4]?"), Turn("assistant", "it is [0.5,0.5,0.7,0.7]")]
    ids, labels = groma.builder.build(turns)
    spans = find_spans(ids, labels, ids_cfg, groma.tokenizer.decode)
    new_ids, new_labels, features = rewrite(ids, labels, spans, [5, 2], ids_cfg, feature_token=groma.image_token_id)
    r5, r2 = ids_cfg.regions[5], ids_cfg.regions[2]
    u = new_ids.index(r5)
    assert new_ids[u - 1:u + 3] == [ids_cfg.roi, r5, ids_cfg.roi_end, groma.image_token_id]
    assert new_labels[u - 1:u + 3] == [IGNORE_INDEX] * 4 and features == [(u + 2, 5)]
    a = new_ids.index(r2)
    assert new_labels[a - 1:a + 2] == [ids_cfg.roi, r2, ids_cfg.roi_end]    # the answer's region is supervised
    # everything outside the spans is unchanged, in order
    kept = [t for t in new_ids if t not in (ids_cfg.roi, ids_cfg.roi_end, r5, r2, groma.image_token_id)]
    inside = {i for s in spans for i in range(s.start, s.end)}
    assert kept == [t for i, t in enumerate(ids) if i not in inside and t != groma.image_token_id]


def test_spans_with_an_index_token_are_kept(groma) -> None:
    ids_cfg = groma.connector.token_ids(groma.tokenizer)
    ids, labels = groma.builder.build([Turn("user", "<image>\nfind it"), Turn("assistant", "<roi><r3></roi>")])
    spans = find_spans(ids, labels, ids_cfg, groma.tokenizer.decode)
    assert len(spans) == 1 and spans[0].region == 3 and spans[0].box is None
    assert rewrite(ids, labels, spans, [None], ids_cfg, None)[0] == ids


def test_generated_region_tokens_become_their_boxes() -> None:
    boxes = [[0.1, 0.1, 0.2, 0.2], [0.5, 0.25, 0.75, 1.0]]
    assert boxes_to_text("<roi><r1></roi>", boxes) == "[0.500,0.250,0.750,1.000]"
    assert boxes_to_text("a red circle <roi> <r0> </roi> and", boxes) == "a red circle [0.100,0.100,0.200,0.200] and"
    assert boxes_to_text("<roi><r7></roi>", boxes) == "<roi><r7></roi>"   # no such region: stays unparsable
    assert boxes_to_text("not present", boxes) == "not present"


def test_region_list_training_adds_missed_ground_truth_and_points_answers_at_it() -> None:
    proposals = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9], [0.52, 0.5, 0.9, 0.9]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    gt_far, gt_near = (0.3, 0.0, 0.45, 0.2), (0.5, 0.5, 0.88, 0.9)
    g = torch.Generator().manual_seed(0)
    rl = build_region_list(proposals, scores, [gt_far, gt_near], [], max_regions=3, max_user_regions=2,
                           training=True, generator=g)
    assert len(rl.boxes) == 3
    # the missed box replaced the weakest non-matching proposal; each answer points at its best region
    assert tuple(rl.boxes[rl.answer_index[0]].tolist()) == pytest.approx(gt_far)
    assert float((rl.boxes[rl.answer_index[1]] - torch.tensor(gt_near)).abs().max()) < 0.05
    infer = build_region_list(proposals, scores, [], [gt_far, gt_far, gt_near], 3, 2)
    assert infer.n_proposals == 3 and infer.user_index == [3, 3, 4]           # user boxes appended, deduplicated
    assert torch.equal(infer.boxes[:3], proposals) and tuple(infer.boxes[3].tolist()) == pytest.approx(gt_far)
    with pytest.raises(ValueError, match="at most 2"):
        build_region_list(proposals, scores, [], [(0, 0, .1, .1), (0, 0, .2, .2), (0, 0, .3, .3)], 3, 2)


def test_box_text_survives_the_round_trip(groma) -> None:
    box = (0.031, 0.5, 0.999, 0.75)
    ids = groma.builder.encode_text(f"at {format_box(box)}")
    spans = find_spans(ids, None, groma.connector.token_ids(groma.tokenizer), groma.tokenizer.decode)
    assert spans[0].box == box
