"""Find ShapesWorld objects in an image (colour, shape, size, box) and score prompt/image agreement.

Built from how ShapesWorld renders (``data/shapesworld/render.py``): flat palette colours on a flat dark
background, objects at least 2 px apart, glyphs in black/white inside large objects. Every pixel takes the nearest of
the palette, background and glyph colours (pixels farther than ``max_dist`` from all of them, e.g. blurred
edges of generated images, are ignored); 4-connected regions of one palette colour of at least ``min_area``
pixels are objects. Shape from the region's row spans inside its box (holes such as glyphs filled):
fill ratio ~1 square, ~0.8 circle, ~0.5 triangle or diamond; a triangle's rows widen to the bottom, a
diamond's peak in the middle. Size: the box side against the small/large ranges of the renderer
(``size_split`` of the dataset's ``object_size``).
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data.shapesworld import BACKGROUND, COLORS, GLYPH_DARK, GLYPH_LIGHT
from ..data.scene_captions import PromptSpec

PALETTE = list(COLORS)
SMALL_LARGE_SPLIT = 0.25       # box side / image side: small objects are 0.16-0.22, large 0.28-0.36 (defaults)


def size_split(object_size: list[float]) -> float:
    """The small/large threshold for a ShapesWorld config's object_size [small_min, small_max, large_min, large_max]."""
    return (object_size[1] + object_size[2]) / 2


@dataclass(frozen=True)
class DetectedObject:
    color: str
    shape: str
    size: str
    box: tuple[float, float, float, float]     # normalised x1, y1, x2, y2
    area: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def colour_labels(rgb: np.ndarray, max_dist: float) -> np.ndarray:
    """[H, W] palette index per pixel; -1 for background, glyph ink and unsure pixels."""
    refs = np.array([COLORS[c] for c in PALETTE] + [BACKGROUND, GLYPH_DARK, GLYPH_LIGHT], dtype=np.float32)
    d = np.linalg.norm(rgb[:, :, None, :].astype(np.float32) - refs[None, None], axis=-1)    # [H, W, K]
    nearest = d.argmin(-1)
    labels = np.where(nearest < len(PALETTE), nearest, -1)
    return np.where(d.min(-1) <= max_dist, labels, -1)


def regions(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool mask, each as an [n, 2] array of (row, col)."""
    seen = np.zeros_like(mask, dtype=bool)
    H, W = mask.shape
    out = []
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, cells = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            cells.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < H and 0 <= cc < W and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    queue.append((rr, cc))
        out.append(np.array(cells))
    return out


def classify_shape(cells: np.ndarray) -> str:
    rows, cols = cells[:, 0], cells[:, 1]
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = r1 - r0 + 1, c1 - c0 + 1
    widths = np.zeros(h)
    for r in range(h):
        cs = cols[rows == r0 + r]
        widths[r] = cs.max() - cs.min() + 1 if len(cs) else 0
    fill = widths.sum() / (h * w)
    if fill > 0.9:
        return "square"
    if fill > 0.68:
        return "circle"
    t = np.linspace(0, 1, h, endpoint=False) + 0.5 / h                 # row centres, 0 = top
    middle = widths[(t > 0.4) & (t < 0.6)].mean() if ((t > 0.4) & (t < 0.6)).any() else widths.mean()
    bottom = widths[t > 0.75].mean() if (t > 0.75).any() else widths[-1]
    return "triangle" if bottom > middle else "diamond"


def detect_objects(image: Image.Image | np.ndarray, max_dist: float = 60.0, min_area: int = 20,
                   split: float = SMALL_LARGE_SPLIT) -> list[DetectedObject]:
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    H, W = rgb.shape[:2]
    labels = colour_labels(rgb, max_dist)
    found = []
    for k, colour in enumerate(PALETTE):
        for cells in regions(labels == k):
            if len(cells) < min_area:
                continue
            r0, c0 = cells.min(0)
            r1, c1 = cells.max(0) + 1
            side = max(r1 - r0, c1 - c0) / max(H, W)
            found.append(DetectedObject(colour, classify_shape(cells),
                                        "large" if side > split else "small",
                                        (c0 / W, r0 / H, c1 / W, r1 / H), len(cells)))
    return found


@dataclass(frozen=True)
class Agreement:
    objects_present: bool      # every prompt object (colour + shape) is in the image
    objects_exact: bool        # ... and nothing else (the same multiset of colour + shape)
    sizes_ok: bool             # every size the prompt names matches
    relation_ok: bool          # the named relation holds (True when none is named)
    object_recall: float       # share of prompt objects present
    colors_present: bool       # every prompt colour is in the image (whatever the shapes): a lenient reading
    colors_exact: bool         # the image's colours are exactly the prompt's (a many-coloured blob fails)

    @property
    def full(self) -> bool:
        return self.objects_exact and self.sizes_ok and self.relation_ok


def relation_holds(a: DetectedObject, rel: str, b: DetectedObject) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return {"above": ay < by, "below": ay > by, "left of": ax < bx, "right of": ax > bx}[rel]


def agreement(spec: PromptSpec, found: list[DetectedObject]) -> Agreement:
    pool = list(found)
    matched: list[DetectedObject | None] = []
    for obj in spec.objects:
        cands = [d for d in pool if d.color == obj.color and d.shape == obj.shape]
        best = max(cands, key=lambda d: d.area) if cands else None
        if best is not None:
            pool.remove(best)
        matched.append(best)
    present = [m is not None for m in matched]
    want = Counter((o.color, o.shape) for o in spec.objects)
    have = Counter((d.color, d.shape) for d in found)
    sizes = all(m is not None and (o.size is None or m.size == o.size) for o, m in zip(spec.objects, matched))
    rel = True
    if spec.relation is not None:
        i, name, j = spec.relation
        rel = matched[i] is not None and matched[j] is not None and relation_holds(matched[i], name, matched[j])
    colours = all(any(d.color == o.color for d in found) for o in spec.objects)
    exact_colours = {d.color for d in found} == {o.color for o in spec.objects}
    return Agreement(all(present), want == have, sizes, rel, sum(present) / len(present), colours, exact_colours)
