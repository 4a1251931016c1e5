"""Judging generated ShapesWorld images against the scenes they should show (the LaVIT checker's readings).

``judge_scenes``: every expected object present (colour + shape), exactly those objects, colours present /
exact, as ``lavit measure`` reports them. ``next_frame``: for a story's next frame, whether the object that
changes is there with its new colour and shape at its new place (centre within ``tolerance`` of the image side;
a move's step is larger, so the last frame fails it), whether every other object is there, and whether the
frame holds exactly the expected objects.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...data.scene_captions import PromptObject, PromptSpec
from ...eval.image_checker import Agreement, agreement, detect_objects
from ..lavit.measure import agreement_rates

TOLERANCE = 0.1


def spec_of(objects: list[dict]) -> PromptSpec:
    return PromptSpec(tuple(PromptObject(o["color"], o["shape"], o.get("size")) for o in objects))


def judge_scenes(objects: list[list[dict]], images) -> dict[str, float]:
    """Checker rates of images against the objects each should show."""
    verdicts: list[Agreement] = [agreement(spec_of(objs), detect_objects(im)) for objs, im in zip(objects, images)]
    return agreement_rates(verdicts)


def _center(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@dataclass(frozen=True)
class FrameVerdict:
    changed_ok: bool       # the changing object, with its new colour and shape, at its new place
    others_ok: bool        # every other object present (colour + shape)
    frame_ok: bool         # all of it, and nothing else

    def as_dict(self) -> dict[str, bool]:
        return {"changed_ok": self.changed_ok, "others_ok": self.others_ok, "frame_ok": self.frame_ok}


def next_frame(item: dict, image, tolerance: float = TOLERANCE) -> FrameVerdict:
    """``item``: a next-frame entry of generation.json (its ``target`` objects and ``changed`` index)."""
    objects = item["target"]["objects"]
    want = objects[item["changed"]]
    found = detect_objects(image)
    cx, cy = _center(want["box"])
    changed = any(d.color == want["color"] and d.shape == want["shape"]
                  and max(abs(d.center[0] - cx), abs(d.center[1] - cy)) <= tolerance for d in found)
    others = [o for k, o in enumerate(objects) if k != item["changed"]]
    others_ok = all(any(d.color == o["color"] and d.shape == o["shape"] for d in found) for o in others)
    exact = agreement(spec_of(objects), found).objects_exact
    return FrameVerdict(changed, others_ok, changed and others_ok and exact)


def frame_rates(verdicts: list[FrameVerdict]) -> dict[str, float]:
    n = max(len(verdicts), 1)
    return {"changed_ok": sum(v.changed_ok for v in verdicts) / n, "others_ok": sum(v.others_ok for v in verdicts) / n,
            "frame_ok": sum(v.frame_ok for v in verdicts) / n, "n": len(verdicts)}
