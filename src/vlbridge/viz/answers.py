"""A figure of test images with the model's answers (and boxes, for grounding questions) beside the references."""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ..eval.exact_match import exact_match  # noqa: E402

BOX = re.compile(r"\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]")


def find_box(text: str) -> tuple[float, float, float, float] | None:
    m = BOX.search(text)
    if not m:
        return None
    try:
        return tuple(float(v) for v in m.groups())
    except ValueError:
        return None


def group_by_image(records) -> "OrderedDict[Path, list]":
    groups: OrderedDict = OrderedDict()
    for r in records:
        if len(r.images) == 1:
            groups.setdefault(r.images[0], []).append(r)
    return groups


def answers_figure(images: list, qa: list[list[tuple[str, str, str]]], out: str | Path, title: str = "") -> Path:
    """images: RGB PIL images; qa[i]: (question, prediction, reference) for image i."""
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.9 * n), gridspec_kw={"width_ratios": [1, 2.6]}, squeeze=False)
    for (ax_img, ax_txt), image, rows in zip(axes, images, qa):
        w, h = image.size
        ax_img.imshow(image, interpolation="nearest")
        ax_img.set_axis_off()
        lines = []
        for question, pred, ref in rows:
            q = question.replace("<image>", "").strip().split("\n")[0]
            ok = exact_match(pred, ref)
            lines.append(f"Q: {q}\nA: {pred or '(empty)'}   {'✓' if ok else '✗ ref: ' + ref}")
            for box, color, style in ((find_box(ref), "white", "--"), (find_box(pred), "lime", "-")):
                if box and ("bounding box" in question):
                    x1, y1, x2, y2 = box
                    ax_img.add_patch(Rectangle((x1 * w - .5, y1 * h - .5), (x2 - x1) * w, (y2 - y1) * h,
                                               fill=False, edgecolor=color, linestyle=style, linewidth=1.5))
        ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=8.5, family="DejaVu Sans",
                    transform=ax_txt.transAxes)
        ax_txt.set_axis_off()
    if title:
        fig.suptitle(title + "   (box: green = model, dashed white = reference)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
