"""ParGo: window geometry, CPP schedules, structured = dense (outputs and gradients), the mask semantics
as dependence properties (via exact-zero gradients), FLOPs against a counter, the auxiliary loss,
registry/save/reload, training in the foundation's loop and the `viz masks` / `viz windows` commands.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from support import tiny_model_config, tiny_run_config
from vlbridge.connectors import CONNECTORS, VisualFeatures, build_connector
from vlbridge.connectors.pargo import ParGoConnector, ParGoOptions
from vlbridge.connectors.pargo_windows import ParGoGeometry, cpp_schedule, raster_windows, tile_windows

VIS, LLM, GRID = 12, 20, (6, 6)
BASE = dict(layers=4, hidden=16, heads=2, num_global=3)


def make(impl="structured", grid=GRID, **options) -> ParGoConnector:
    torch.manual_seed(0)
    return build_connector("pargo", {**BASE, **options, "attention_impl": impl}, VIS, LLM, grid)


def patches(batch=2, grid=GRID, seed=1) -> torch.Tensor:
    return torch.randn(batch, grid[0] * grid[1], VIS, generator=torch.Generator().manual_seed(seed))


# ---- geometry -------------------------------------------------------------------------------------------
def test_tile_windows_by_hand():
    w = tile_windows((3, 3), [2, 2], [1, 1])                       # overlapping 2x2 tiles on a 3x3 grid
    assert w.index.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    assert w.position.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    edge = tile_windows((2, 5), [2, 2], None)                      # 5 columns: tiles at 0, 2 and flush at 3
    assert [b[1] for b in edge.boxes] == [0, 2, 3]
    assert torch.unique(edge.index).numel() == 10                  # every patch covered
    assert not edge.is_partition() and tile_windows((4, 4), [2, 2], None).num == 4


def test_raster_windows_released_layout():
    w = raster_windows((24, 24), None, None, 288)                  # the released code: k = 576 / 288 = 2
    assert w.size == 2 and w.num == 288 and w.is_partition()
    assert w.index[5].tolist() == [10, 11] and w.boxes[12] == (1, 0, 1, 2)
    overlap = raster_windows((2, 4), 3, [2], None)                 # 8 patches, windows of 3 every 2, tail flush
    assert overlap.index.tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [5, 6, 7]]


def test_cpp_schedules():
    assert cpp_schedule(4, "cascade", 100) == [0, 1, 2, None]
    assert cpp_schedule(3, "cascade", 100) == [0, 1, None]
    assert cpp_schedule(2, "cascade", 100) == [0, None]
    assert cpp_schedule(6, "cascade", 3) == [0, 1, 2, None, None, None]   # radius >= max distance = all
    assert cpp_schedule(3, "all", 100) == [None] * 3
    assert cpp_schedule(3, "cascade", 100, radii=[0, 3, -1]) == [0, 3, None]


def test_masks_by_hand():
    opts = ParGoOptions(layers=2, num_global=1, windows="raster", num_partial=3)
    g = ParGoGeometry.from_options(opts, (2, 3))                   # 6 patches, 3 windows of 2
    assert g.cross_mask().int().tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1],
                                             [1, 1, 1, 1, 1, 1]]
    assert g.self_mask(0).int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert g.self_mask(1).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    mixed = ParGoGeometry.from_options(ParGoOptions(layers=2, num_global=1, windows="raster", num_partial=3,
                                                    mix_partial_global=True), (2, 3))
    assert mixed.self_mask(0)[:3, 3].all() and mixed.self_mask(0)[3, :3].all()


@pytest.mark.parametrize("options, message", [
    (dict(num_partial=5), "gives 9 partial tokens"),
    (dict(windows="raster"), "need num_partial"),
    (dict(windows="raster", num_partial=7), "do not split"),
    (dict(tile=[7, 1]), "between 1 and 6"),
    (dict(heads=3), "not divisible"),
    (dict(cpp="widen"), "'cascade' or 'all'"),
    (dict(cpp_radii=[0, 1]), "2 entries for 4 layers"),
])
def test_bad_options_are_explained(options, message):
    with pytest.raises(ValueError, match=message):
        make(**options)


def test_registry_rejects_unknown_option():
    assert CONNECTORS["pargo"] is ParGoConnector
    with pytest.raises(ValueError, match="no option"):
        build_connector("pargo", {"windw": "tile"}, VIS, LLM, GRID)


# ---- structured path == dense reference ----------------------------------------------------------------------
def run(c: ParGoConnector, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    c.zero_grad(set_to_none=True)
    out = c(VisualFeatures(x, c.grid)).tokens
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in c.named_parameters()}


@pytest.mark.parametrize("options", [
    dict(),                                                          # 2x2 tiles, cascade
    dict(tile=[2, 2], stride=[1, 1]),                                # overlapping tiles, cascade 0, 1, 2, all
    dict(tile=[3, 2], stride=[2, 1], cpp="all"),                     # overlapping, uneven, edge-flush tiles
    dict(windows="raster", num_partial=18),                          # released layout (k = 2), cascade
    dict(windows="raster", num_partial=18, cpp="all"),               # released code exactly
    dict(windows="raster", raster_size=3, stride=[2]),               # overlapping raster runs
    dict(tile=[2, 3], mix_partial_global=True),                      # partial <-> global open
], ids=lambda o: json.dumps(o))
def test_structured_equals_dense(options):
    x = patches(batch=3)
    s, d = make("structured", **options), make("dense", **options)
    d.load_state_dict(s.state_dict())
    (ys, gxs, gps), (yd, gxd, gpd) = run(s, x), run(d, x)
    assert ys.shape == (3, s.num_tokens(), LLM)
    assert (ys - yd).abs().max() <= 1e-5
    assert (gxs - gxd).abs().max() <= 1e-5
    for name in gps:
        assert (gps[name] - gpd[name]).abs().max() <= 1e-5, name
    assert gxs.abs().sum() > 0 and all(g.abs().sum() > 0 for g in gps.values())


# ---- mask semantics, as dependence properties --------------------------------------------------------------
def dependence(c: ParGoConnector, token: int, upto: int | None = None, x=None) -> torch.Tensor:
    """[N] bool: which patches token `token`'s state after `upto` layers depends on (exactly non-zero grad)."""
    x = (patches(batch=1) if x is None else x).clone().requires_grad_(True)
    h = c.project(c.vision_norm(x), upto=upto)
    probe = torch.randn(h.shape[-1], generator=torch.Generator().manual_seed(7))   # (a LayerNorm's sum is constant)
    (h[0, token] * probe).sum().backward()
    return x.grad[0].abs().sum(-1) > 0


@pytest.mark.parametrize("impl", ["structured", "dense"])
@pytest.mark.parametrize("options", [dict(tile=[2, 2], stride=[1, 1]), dict(windows="raster", num_partial=12)],
                         ids=["tile-overlap", "raster"])
def test_first_layer_partial_token_sees_only_its_window(impl, options):
    c = make(impl, **options)
    x = patches(batch=1)
    first = c.project(c.vision_norm(x), upto=1)
    for i in (0, 7, c.num_partial - 1):
        window = torch.zeros(36, dtype=torch.bool)
        window[c.geometry.windows.index[i]] = True
        changed = x.clone()
        changed[0, ~window] += torch.randn(int((~window).sum()), VIS)      # change every patch outside window i
        after = c.project(c.vision_norm(changed), upto=1)
        assert torch.allclose(after[0, i], first[0, i], atol=1e-6)
        assert not torch.allclose(after[0, c.num_partial:], first[0, c.num_partial:])   # globals do change
        assert torch.equal(dependence(c, i, upto=1, x=x), window)


@pytest.mark.parametrize("impl", ["structured", "dense"])
def test_receptive_field_grows_with_the_cascade(impl):
    """After layer l a partial token depends exactly on the windows within the sum of the CPP radii so far
    (layer 1's CPP sees only the learned queries); after the last cascade layer, on every window."""
    c = make(impl, tile=[1, 1], layers=4)                        # 36 windows of one patch, radii 0, 1, 2, all
    assert c.geometry.radii == [0, 1, 2, None]
    dist = c.geometry.distance
    for i in (0, 14, 35):
        for upto, reach in [(1, 0), (2, 1), (3, 3)]:
            expected = torch.zeros(36, dtype=torch.bool)
            expected[c.geometry.windows.index[dist[i] <= reach].flatten()] = True
            assert torch.equal(dependence(c, i, upto), expected), (i, upto)
        assert dependence(c, i).all()                             # after the last layer: every window


def test_all_schedule_sees_everything_from_the_second_layer():
    c = make(cpp="all", tile=[1, 1])
    assert dependence(c, 0, upto=1).sum() == 1 and dependence(c, 0, upto=2).all()


@pytest.mark.parametrize("impl", ["structured", "dense"])
def test_global_tokens_depend_on_every_patch(impl):
    c = make(impl)
    for g in range(c.num_partial, c.num_tokens()):
        assert dependence(c, g, upto=1).all()
    x = patches(batch=1)
    base = c(VisualFeatures(x, GRID)).tokens[0, c.num_partial:]
    for j in (0, 17, 35):                                         # changing any single patch changes them
        y = x.clone()
        y[0, j] += torch.randn(VIS)                                 # (a constant shift is LayerNorm-invisible)
        moved = (c(VisualFeatures(y, GRID)).tokens[0, c.num_partial:] - base).abs().amax(-1)
        assert (moved > 1e-6).all()


@pytest.mark.parametrize("impl", ["structured", "dense"])
def test_blocked_global_tokens_ignore_partial_queries(impl):
    x = patches()

    def globals_after_perturbing_partial_queries(c):
        before = c(VisualFeatures(x, GRID)).tokens[:, c.num_partial:]
        with torch.no_grad():
            c.queries[: c.num_partial] += torch.randn(c.num_partial, c.hidden)
            c.query_pos[: c.num_partial] += 1.0
        return before, c(VisualFeatures(x, GRID)).tokens[:, c.num_partial:]

    a, b = globals_after_perturbing_partial_queries(make(impl))
    assert torch.allclose(a, b, atol=1e-6)
    a, b = globals_after_perturbing_partial_queries(make(impl, mix_partial_global=True))
    assert (a - b).abs().max() > 1e-4                            # the switch really opens the path


# ---- FLOPs, auxiliary loss ----------------------------------------------------------------------------------
def _sdpa_flops(q, k, v, *args, out_shape=None, **kwargs):
    return 4 * math.prod(q[:-1]) * k[-2] * q[-1]                 # QK^T and AV over every (query, key) pair


@pytest.mark.parametrize("impl", ["structured", "dense"])
@pytest.mark.parametrize("options", [dict(), dict(windows="raster", num_partial=12, cpp="all"),
                                     dict(tile=[2, 2], stride=[1, 1], mix_partial_global=True)])
def test_flops_match_a_counter(impl, options):
    c = make(impl, **options)
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        c(VisualFeatures(patches(batch=3), GRID))
    windowed = 0                       # the structured window attention is elementwise: invisible to the counter
    if impl == "structured":
        windowed = 2 * 2 * c.hidden * c.num_partial * c.geometry.windows.size * 3 * len(c.layers)
    assert c.flops(3) == counter.get_total_flops() + windowed


def test_structured_needs_fewer_flops():
    opts = dict(windows="raster", num_partial=288, num_global=16, hidden=64, heads=4, layers=2)
    s = build_connector("pargo", opts, 32, 32, (24, 24))
    d = build_connector("pargo", {**opts, "attention_impl": "dense"}, 32, 32, (24, 24))
    assert s.flops(8) < d.flops(8)


def test_masked_patch_loss():
    c = make(aux_weight=0.5, aux_mask_ratio=0.5, tile=[2, 2], stride=[1, 1])
    occluded = c.sample_occlusion(4, torch.Generator().manual_seed(0))            # [B, N]
    per_window = occluded[:, c.window_index].sum(-1)                               # [B, P]
    assert (per_window >= 2).all()                                                 # round(0.5 * 4) per window
    x = patches(batch=4)
    c.train()
    out = c(VisualFeatures(x, GRID))
    loss = out.aux_losses["pargo_masked_patches"]
    assert loss.ndim == 0 and loss > 0
    loss.backward()
    assert c.aux_head[0].weight.grad.abs().sum() > 0 and c.queries.grad.abs().sum() > 0
    assert c.aux_mask_token.grad.abs().sum() > 0
    assert not c.eval()(VisualFeatures(x, GRID)).aux_losses                        # training only
    assert not make().train()(VisualFeatures(x, GRID)).aux_losses                  # off by default
    # the occluded patches' own values cannot leak into the prediction: only the target moves
    c.zero_grad()
    y = x.clone().requires_grad_(True)
    torch.manual_seed(3)
    c.masked_patch_loss(y, occluded).backward()
    assert y.grad[occluded].abs().sum() == 0 and y.grad[~occluded].abs().sum() > 0


# ---- in the model: save / reload, training ------------------------------------------------------------------
PARGO_TINY = {"layers": 2, "heads": 2, "num_global": 2, "aux_weight": 0.1}


def test_save_and_reload(shapes_dir, tmp_path):
    from vlbridge.data.records import load_records
    from vlbridge.models.build import build_model
    from vlbridge.models.vlm import VLBridgeModel
    torch.manual_seed(0)
    texts = [t.text for r in load_records(shapes_dir / "train.json") for t in r.turns]
    model = build_model(tiny_model_config("pargo", dict(PARGO_TINY, tile=[2, 1])), texts).eval()
    assert model.visual_tokens_per_image() == 8 + 2                 # 4x4 grid in 2x1 tiles + 2 global
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["connector"]
    assert saved["name"] == "pargo" and saved["options"]["tile"] == [2, 1] and saved["options"]["cpp"] == "cascade"
    again = VLBridgeModel.from_pretrained(tmp_path / "m")
    assert again.connector.options == model.connector.options
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.encode_images(pixels).tokens, again.encode_images(pixels).tokens)


def test_trains_in_the_foundation_loop(shapes_dir, tmp_path):
    from vlbridge.train.trainer import Trainer
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=3)
    cfg.model.connector.name, cfg.model.connector.options = "pargo", dict(PARGO_TINY)
    trainer = Trainer(cfg)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.connector.state_dict().items()}
    metrics = [trainer.train_step() for _ in range(3)]
    assert all(m["aux"] > 0 and math.isfinite(m["loss"]) for m in metrics)     # the aux loss is added
    after = trainer.model.connector.state_dict()
    frozen = [k for k in before if torch.equal(before[k], after[k])]
    assert not frozen, f"connector tensors that did not train: {frozen}"


# ---- figures ---------------------------------------------------------------------------------------------------
def test_viz_masks_and_windows_write_pngs(tmp_path, capsys):
    from PIL import Image
    from vlbridge.cli.main import main
    opts = json.dumps({"tile": [2, 2], "stride": [1, 1], "layers": 3})
    assert main(["viz", "masks", "--connector", "pargo", "--model.connector.options", opts, "--grid", "6x6",
                 "--out", str(tmp_path / "masks")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "masks").glob("*.png"))
    assert pngs == ["pargo_layer1.png", "pargo_layer2.png", "pargo_layer3.png", "pargo_masks.png"]
    assert all((tmp_path / "masks" / p).stat().st_size > 5_000 for p in pngs)
    Image.new("RGB", (96, 64), (200, 120, 40)).save(tmp_path / "img.png")
    assert main(["viz", "windows", "--image", str(tmp_path / "img.png"), "--preset", "tiny-cpu",
                 "--out", str(tmp_path / "windows.png")]) == 0
    assert (tmp_path / "windows.png").stat().st_size > 5_000
    capsys.readouterr()
    assert main(["viz", "masks", "--connector", "mlp", "--out", str(tmp_path / "x")]) == 2
    assert "no attention masks" in capsys.readouterr().err
