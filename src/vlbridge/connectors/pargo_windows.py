"""ParGo geometry: which patches each partial token sees (windows) and the attention masks of every layer.

Pure index arithmetic, no weights: the connector (``pargo.py``) and the figures (``viz/pargo_masks.py``)
both build a ``ParGoGeometry`` from the options and the patch grid.

Windows (the Partial-Global Perception cross-attention)
  ``tile``   contiguous 2-D tiles of the patch grid, ``tile = (rows, cols)`` patches, placed every
             ``stride = (rows, cols)`` patches (default: the tile size, i.e. no overlap; a smaller stride
             overlaps). When the stride does not land on the last row/column, one more tile is placed flush
             with the edge, so every patch is covered. Partial tokens are numbered in raster order of tiles.
  ``raster`` 1-D runs of ``k`` consecutive patches in raster order (the released code: k = N / P, on
             24x24 with P = 288 a non-overlapping 1x2 window), placed every ``stride`` (default k) patches.
Global tokens see every patch.

Cascaded Partial Perception (the self-attention among partial tokens)
  Partial token i may attend to partial token j when ``dist(i, j) <= r_l`` in layer l, a band around the
  diagonal. ``dist`` is the Chebyshev distance between the tiles' positions in the tile grid (``tile``:
  the 3x3, 5x5, ... neighbourhood of tiles) or ``|i - j|`` (``raster``: the band of the paper figure).
  Schedules (``r = None`` means unrestricted, "one-to-all"):
    ``cascade`` (default) r_0 = 0 (one-to-one, the diagonal), then the half-width doubles,
                r_l = 2^(l-1) for 0 < l < L-1, and the last layer is one-to-all (r = None). L=2: [0, all];
                L=3: [0, 1, all]; L=4: [0, 1, 2, all]; L=1: [0]. A radius that already covers every pair
                counts as one-to-all. (With r = 1 the first row of the 1-D band sees two tokens, as drawn
                in the figure's "one-to-two".)
    ``all``     one-to-all in every layer (the released code).
  Explicit radii (``cpp_radii``, -1 = all) override the schedule.
Global tokens attend to each other; partial<->global self-attention is blocked (released code) unless
``mix_partial_global``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _starts(length: int, size: int, step: int, what: str) -> list[int]:
    """Window starts along one axis: every `step`, plus one flush with the end if the last misses it."""
    if not 1 <= size <= length:
        raise ValueError(f"pargo: {what} window size {size} must be between 1 and {length}")
    if step < 1:
        raise ValueError(f"pargo: {what} stride must be >= 1, got {step}")
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


@dataclass(frozen=True)
class Windows:
    index: torch.Tensor        # [P, K] patch indices (raster order on the grid) seen by each partial token
    position: torch.Tensor     # [P, 2] (row, col) of each window in the window grid, for the CPP distance
    boxes: list[tuple[int, int, int, int]]  # (row0, col0, rows, cols) on the patch grid; raster runs may wrap
    grid: tuple[int, int]
    kind: str

    @property
    def num(self) -> int:
        return self.index.shape[0]

    @property
    def size(self) -> int:
        return self.index.shape[1]

    def is_partition(self) -> bool:
        """True when the windows are consecutive, in order and disjoint: index == arange(N).view(P, K)."""
        n = self.grid[0] * self.grid[1]
        return self.index.numel() == n and bool((self.index.flatten() == torch.arange(n)).all())


def tile_windows(grid: tuple[int, int], tile: list[int], stride: list[int] | None) -> Windows:
    rows, cols = grid
    if len(tile) != 2 or (stride is not None and len(stride) != 2):
        raise ValueError(f"pargo: tile windows need tile=[rows, cols] and stride=[rows, cols], got {tile}, {stride}")
    th, tw = tile
    sh, sw = stride or tile
    r_starts = _starts(rows, th, sh, "tile row")
    c_starts = _starts(cols, tw, sw, "tile col")
    local = (torch.arange(th)[:, None] * cols + torch.arange(tw)[None, :]).flatten()       # [K]
    index, position, boxes = [], [], []
    for a, r0 in enumerate(r_starts):
        for b, c0 in enumerate(c_starts):
            index.append(local + r0 * cols + c0)
            position.append((a, b))
            boxes.append((r0, c0, th, tw))
    return Windows(torch.stack(index), torch.tensor(position), boxes, (rows, cols), "tile")


def raster_windows(grid: tuple[int, int], size: int | None, stride: list[int] | None,
                   num: int | None) -> Windows:
    rows, cols = grid
    n = rows * cols
    if stride is not None and len(stride) != 1:
        raise ValueError(f"pargo: raster windows take stride=[step], got {stride}")
    if size is None:
        if num is None:
            raise ValueError("pargo: raster windows need num_partial (window = N / num_partial) or raster_size")
        if n % num:
            raise ValueError(f"pargo: raster windows: {n} patches do not split into num_partial={num} equal windows; "
                             f"set raster_size")
        size = n // num
    step = stride[0] if stride else size
    if num is None:
        starts = _starts(n, size, step, "raster")
    else:
        starts = [i * step for i in range(num)]
        if step < 1 or starts[-1] + size > n:
            raise ValueError(f"pargo: {num} raster windows of {size} patches every {step} do not fit in {n} patches")
    index = torch.stack([torch.arange(s, s + size) for s in starts])
    position = torch.stack([torch.zeros(len(starts), dtype=torch.long), torch.arange(len(starts))], 1)
    boxes = [(s // cols, s % cols, 1, size) for s in starts]
    return Windows(index, position, boxes, (rows, cols), "raster")


def cpp_schedule(num_layers: int, schedule: str, max_dist: int, radii: list[int] | None = None) -> list[int | None]:
    """Band half-width of the partial self-attention per layer; None = one-to-all (see the module docstring)."""
    if radii is not None:
        if len(radii) != num_layers:
            raise ValueError(f"pargo: cpp_radii has {len(radii)} entries for {num_layers} layers")
        out = [None if r < 0 else int(r) for r in radii]
    elif schedule == "all":
        out = [None] * num_layers
    elif schedule == "cascade":
        out = [0] + [2 ** (l - 1) for l in range(1, num_layers - 1)] + ([None] if num_layers > 1 else [])
    else:
        raise ValueError(f"pargo: cpp must be 'cascade' or 'all', got {schedule!r}")
    return [None if r is not None and r >= max_dist else r for r in out]


class ParGoGeometry:
    """Windows, CPP radii and the dense boolean masks (True = may attend) for every layer."""

    def __init__(self, windows: Windows, num_global: int, radii: list[int | None], mix_partial_global: bool):
        self.windows, self.num_global, self.radii = windows, num_global, radii
        self.mix_partial_global = mix_partial_global
        pos = windows.position
        self.distance = (pos[:, None, :] - pos[None, :, :]).abs().amax(-1)                # [P, P] Chebyshev

    @classmethod
    def from_options(cls, options, grid: tuple[int, int]) -> "ParGoGeometry":
        grid = (int(grid[0]), int(grid[1]))
        if options.windows == "tile":
            windows = tile_windows(grid, list(options.tile), options.stride)
            if options.num_partial is not None and options.num_partial != windows.num:
                raise ValueError(f"pargo: tile {list(options.tile)} stride {options.stride or list(options.tile)} "
                                 f"on the {grid[0]}x{grid[1]} grid gives {windows.num} partial tokens, but "
                                 f"num_partial={options.num_partial}")
        elif options.windows == "raster":
            windows = raster_windows(grid, options.raster_size, options.stride, options.num_partial)
        else:
            raise ValueError(f"pargo: windows must be 'tile' or 'raster', got {options.windows!r}")
        if options.num_global < 0:
            raise ValueError(f"pargo: num_global must be >= 0, got {options.num_global}")
        max_dist = int(windows.position.max(0).values.max()) if windows.num > 1 else 0
        radii = cpp_schedule(options.layers, options.cpp, max_dist, options.cpp_radii)
        return cls(windows, options.num_global, radii, options.mix_partial_global)

    @property
    def num_partial(self) -> int:
        return self.windows.num

    @property
    def num_tokens(self) -> int:
        return self.windows.num + self.num_global

    def band(self, layer: int) -> torch.Tensor | None:
        """[P, P] partial<->partial mask of `layer`; None = all pairs allowed."""
        r = self.radii[layer]
        return None if r is None else self.distance <= r

    def self_mask(self, layer: int) -> torch.Tensor:
        """[T, T] self-attention mask over [partial; global] queries (T = P + G)."""
        p, t = self.num_partial, self.num_tokens
        mask = torch.full((t, t), self.mix_partial_global)
        band = self.band(layer)
        mask[:p, :p] = True if band is None else band
        mask[p:, p:] = True
        return mask

    def cross_mask(self) -> torch.Tensor:
        """[T, N] cross-attention mask: partial token i sees its window, global tokens see every patch."""
        n = self.windows.grid[0] * self.windows.grid[1]
        mask = torch.zeros(self.num_tokens, n, dtype=torch.bool)
        mask[torch.arange(self.num_partial)[:, None], self.windows.index] = True
        mask[self.num_partial:] = True
        return mask
