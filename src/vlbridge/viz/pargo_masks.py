"""Figures of ParGo's geometry: the attention masks of every layer and the partial tokens' windows on an image.

``mask_figures`` draws, like the paper's figure, the Partial-Global cross-attention mask ([P + G, N]: which
patches each query sees) and the self-attention mask of each layer ([P + G, P + G]: the Cascaded Partial
Perception band, the global block and the blocked/open partial<->global blocks). Grey = attends, white = masked.
``windows_figure`` outlines every partial token's window of patches on the image the encoder sees.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..connectors.pargo_windows import ParGoGeometry  # noqa: E402

MASK_COLORS = ListedColormap(["white", "#7f7f7f"])           # False = masked, True = attends


def _radius_name(radius: int | None) -> str:
    return "one-to-all" if radius is None else "one-to-one" if radius == 0 else f"band radius {radius}"


def _draw_mask(ax, mask: np.ndarray, num_partial: int, title: str, xlabel: str, split_columns: bool) -> None:
    ax.imshow(mask, cmap=MASK_COLORS, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.axhline(num_partial - 0.5, color="#1f77b4", lw=1)    # partial rows above, global rows below
    if split_columns:
        ax.axvline(num_partial - 0.5, color="#1f77b4", lw=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(f"queries: {num_partial} partial | {mask.shape[0] - num_partial} global", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _layer_panels(axes, geometry: ParGoGeometry, layer: int, cross: np.ndarray) -> None:
    p = geometry.num_partial
    _draw_mask(axes[0], geometry.self_mask(layer).numpy(), p,
               f"layer {layer + 1} self-attention (CPP: {_radius_name(geometry.radii[layer])})",
               "keys: partial | global queries", split_columns=True)
    _draw_mask(axes[1], cross, p, f"layer {layer + 1} cross-attention (PGP)", "keys: patches (raster order)",
               split_columns=False)


def mask_figures(geometry: ParGoGeometry, out_dir: str | Path, title: str = "") -> list[Path]:
    """One PNG per layer (pargo_layer{l}.png) and an overview of all layers (pargo_masks.png)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cross = geometry.cross_mask().numpy()
    layers = len(geometry.radii)
    written = []
    for layer in range(layers):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        _layer_panels(axes, geometry, layer, cross)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = out_dir / f"pargo_layer{layer + 1}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, layers + 1, figsize=(3.3 * (layers + 1), 3.6), squeeze=False)
    axes = axes[0]
    _draw_mask(axes[0], cross, geometry.num_partial, "cross-attention (every layer)", "patches", split_columns=False)
    for layer in range(layers):
        _draw_mask(axes[layer + 1], geometry.self_mask(layer).numpy(), geometry.num_partial,
                   f"layer {layer + 1}: {_radius_name(geometry.radii[layer])}", "partial | global", True)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = out_dir / "pargo_masks.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return written + [path]


def _row_runs(patches: list[int], cols: int) -> list[tuple[int, int, int]]:
    """Patch indices -> (row, first col, length) runs of horizontally adjacent patches."""
    runs: list[list[int]] = []
    for idx in sorted(patches):
        r, c = divmod(idx, cols)
        if runs and runs[-1][0] == r and runs[-1][1] + runs[-1][2] == c:
            runs[-1][2] += 1
        else:
            runs.append([r, c, 1])
    return [tuple(x) for x in runs]


def windows_figure(image, geometry: ParGoGeometry, out: str | Path, title: str = "") -> Path:
    """image: RGB PIL image. Each partial token's window outlined in its own colour (numbered when few)."""
    windows = geometry.windows
    rows, cols = windows.grid
    width, height = image.size
    cw, ch = width / cols, height / rows
    fig, ax = plt.subplots(figsize=(7, 7 * height / width + 0.6))
    ax.imshow(np.asarray(image))
    for c in range(cols + 1):
        ax.axvline(c * cw - 0.5, color="white", lw=0.3, alpha=0.5)
    for r in range(rows + 1):
        ax.axhline(r * ch - 0.5, color="white", lw=0.3, alpha=0.5)
    colors = plt.get_cmap("tab20")
    inset = 0.08                                              # shrink boxes a little so overlaps stay visible
    for i, patches in enumerate(windows.index.tolist()):
        color = colors(i % 20)
        runs = _row_runs(patches, cols)
        if windows.kind == "tile":                            # one rectangle per tile
            r0, c0, th, tw = windows.boxes[i]
            runs = [(r0, c0, tw, th)]
        else:
            runs = [(r, c, n, 1) for r, c, n in runs]
        for r, c, n, h in runs:
            ax.add_patch(Rectangle(((c + inset) * cw - 0.5, (r + inset) * ch - 0.5), (n - 2 * inset) * cw,
                                   (h - 2 * inset) * ch, fill=True, facecolor=(*color[:3], 0.18),
                                   edgecolor=color, lw=1.4))
        if windows.num <= 64:
            r, c, n, h = runs[0]
            ax.text((c + n / 2) * cw - 0.5, (r + h / 2) * ch - 0.5, str(i), color="white", fontsize=7,
                    ha="center", va="center", bbox=dict(facecolor=color, alpha=0.8, pad=1, lw=0))
    ax.set_axis_off()
    ax.set_title(title or f"{windows.num} partial windows ({windows.kind}) on the {rows}x{cols} patch grid; "
                          f"{geometry.num_global} global tokens see the whole image", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
