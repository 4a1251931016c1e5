"""Box text format, robust parsing of generated boxes, IoU (hand-computed cases)."""
import pytest

from vlbridge.data.boxes import box_iou, format_box, parse_box, parse_boxes


def test_format_round_trip() -> None:
    text = format_box([0.125, 0.25, 0.375, 0.5])
    assert text == "[0.125,0.250,0.375,0.500]"
    assert parse_box(text).box == (0.125, 0.25, 0.375, 0.5)


@pytest.mark.parametrize("text, box, fixed", [
    ("The box is [0.1, 0.2, 0.3, 0.4].", (0.1, 0.2, 0.3, 0.4), ()),
    ("(0.1 0.2 0.3 0.4)", (0.1, 0.2, 0.3, 0.4), ()),
    ("[0.3,0.4,0.1,0.2]", (0.1, 0.2, 0.3, 0.4), ("reordered",)),
    ("[-0.2,0.1,1.3,0.5]", (0.0, 0.1, 1.0, 0.5), ("clamped",)),
    ("0.1, 0.2, 0.3, 0.4", (0.1, 0.2, 0.3, 0.4), ()),
    ("[.5,0.,1,1]", (0.5, 0.0, 1.0, 1.0), ()),
])
def test_parse_repairs(text, box, fixed) -> None:
    p = parse_box(text)
    assert p.ok and p.box == pytest.approx(box) and p.fixed == fixed


def test_pixel_boxes_need_image_size() -> None:
    assert not parse_box("[10,20,30,40]").ok
    assert parse_box("[10,20,30,40]", image_size=(100, 200)).box == pytest.approx((0.1, 0.1, 0.3, 0.2))


@pytest.mark.parametrize("text", ["a red circle", "[0.1,0.2,0.3", "[0.1,0.2,0.1,0.4]", ""])
def test_unparsable_is_reported(text) -> None:
    p = parse_box(text)
    assert p.box is None and p.error


def test_several_boxes_in_order() -> None:
    boxes = parse_boxes("a circle [0.1,0.1,0.2,0.2] left of a square [0.5,0.5,0.9,0.9]")
    assert [b.box for b in boxes] == [(0.1, 0.1, 0.2, 0.2), (0.5, 0.5, 0.9, 0.9)]


def test_iou_hand_computed() -> None:
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)) == 0.0
    # overlap 0.25x0.5 = 0.125; union 0.25 + 0.25 - 0.125 = 0.375
    assert box_iou((0, 0, 0.5, 0.5), (0.25, 0, 0.75, 0.5)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
