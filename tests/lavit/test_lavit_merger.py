"""LaVIT token merger: the attention rules as properties, the edge cases, padding, and the gradient path.

- a kept token's output does not depend on later kept tokens (causal self-attention among kept tokens);
- dropped tokens influence kept ones only through cross-attention, and cross-attention sees only dropped
  tokens;
- nothing dropped: the cross-attention adds exactly zero; one kept: a finite single token;
- a padded batch of images with different keep counts equals each image alone;
- the straight-through path (weights with gradient) computes the same forward as the boolean-mask path;
- the kept-token path equals the all-token masked reference (``merger_reference``) at the same decisions:
  outputs and every gradient, with hard decisions (inference, a merger trained through the LLM loss) and
  straight-through weights (tokenizer training), for any mix of kept counts (all kept, one kept);
- its work follows the kept count (FLOPs counted, not timed).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbridge.lavit.merger import TokenMerger
from vlbridge.lavit.merger_reference import gather_kept, merge_all_tokens
from vlbridge.lavit.selector import Selection

N, D = 12, 16


def selection(keep: torch.Tensor, weight: torch.Tensor | None = None) -> Selection:
    keep = keep.bool()
    p = keep.float() * 0.8 + 0.1
    return Selection(keep, keep.float() if weight is None else weight, p, torch.stack([p, 1 - p], -1).log())


@pytest.fixture(scope="module")
def merger():
    torch.manual_seed(0)
    m = TokenMerger(D, heads=2, layers=2, mlp_ratio=2, n_positions=N).eval()
    with torch.no_grad():                       # larger weights: every input visibly moves every output
        for p in m.parameters():
            if p.dim() >= 2:
                p.mul_(3)
    return m


KEEP = torch.tensor([[1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1]])           # kept at 0, 3, 4, 6, 9, 11


def kept_outputs(m, x, keep):
    out = m(x, selection(keep))
    return out.tokens[0, : int(out.lengths[0])]                        # [M, D]


def test_gather_raster_order_and_lengths(merger):
    x = torch.randn(1, N, D)
    out = merger(x, selection(KEEP))
    assert out.lengths.tolist() == [6]
    assert out.positions[0].tolist() == [0, 3, 4, 6, 9, 11]


def test_kept_token_ignores_later_kept_tokens(merger):
    x = torch.randn(1, N, D)
    base = kept_outputs(merger, x, KEEP)
    x2 = x.clone()
    x2[0, 9] += 5 * torch.randn(D)                                     # 5th kept token (index 4 of M)
    moved = kept_outputs(merger, x2, KEEP)
    assert torch.allclose(base[:4], moved[:4], atol=1e-6)              # earlier kept tokens unchanged
    assert not torch.allclose(base[4:], moved[4:], atol=1e-3)          # itself and later ones change


def test_dropped_tokens_act_only_through_cross_attention(merger):
    x = torch.randn(1, N, D)
    x2 = x.clone()
    x2[0, [1, 2, 5]] += 5 * torch.randn(3, D)                          # perturb dropped tokens only
    assert not torch.allclose(kept_outputs(merger, x, KEEP), kept_outputs(merger, x2, KEEP), atol=1e-3)
    no_cross = copy.deepcopy(merger)
    with torch.no_grad():
        for block in no_cross.blocks:
            block.cross_attn.o.weight.zero_()
            block.cross_attn.o.bias.zero_()
    assert torch.allclose(kept_outputs(no_cross, x, KEEP), kept_outputs(no_cross, x2, KEEP), atol=1e-6)


def test_cross_attention_sees_only_dropped_tokens(merger):
    """With self-attention switched off, a kept token's output depends on no other kept token."""
    no_self = copy.deepcopy(merger)
    with torch.no_grad():
        for block in no_self.blocks:
            block.self_attn.o.weight.zero_()
            block.self_attn.o.bias.zero_()
    x = torch.randn(1, N, D)
    x2 = x.clone()
    x2[0, 3] += 5 * torch.randn(D)                                     # the 2nd kept token
    a, b = kept_outputs(no_self, x, KEEP), kept_outputs(no_self, x2, KEEP)
    others = [0, 2, 3, 4, 5]
    assert torch.allclose(a[others], b[others], atol=1e-6)
    assert not torch.allclose(a[1], b[1], atol=1e-3)


def test_nothing_dropped_cross_attention_adds_zero(merger):
    keep = torch.ones(1, N)
    x = torch.randn(1, N, D)
    other = copy.deepcopy(merger)
    with torch.no_grad():
        for block in other.blocks:
            for p in block.cross_attn.parameters():
                p.normal_()                                            # any cross-attention weights, incl. bias
    a, b = kept_outputs(merger, x, keep), kept_outputs(other, x, keep)
    assert a.shape == (N, D)
    assert torch.allclose(a, b, atol=1e-6)


def test_one_kept_token(merger):
    keep = torch.zeros(1, N)
    keep[0, 5] = 1
    x = torch.randn(1, N, D)
    out = merger(x, selection(keep))
    assert out.lengths.tolist() == [1] and out.positions[0].tolist() == [5]
    assert torch.isfinite(out.tokens).all()
    x2 = x.clone()
    x2[0, 0] += 5 * torch.randn(D)                                     # a dropped token before it
    assert not torch.allclose(out.tokens, merger(x2, selection(keep)).tokens, atol=1e-3)


def test_padded_batch_equals_images_alone(merger):
    keeps = torch.stack([KEEP[0], torch.ones(N), torch.zeros(N).index_fill(0, torch.tensor([7]), 1)])
    x = torch.randn(3, N, D)
    batch = merger(x, selection(keeps))
    assert batch.lengths.tolist() == [6, N, 1]
    for b in range(3):
        alone = merger(x[b: b + 1], selection(keeps[b: b + 1]))
        n = int(alone.lengths[0])
        assert torch.allclose(batch.tokens[b, :n], alone.tokens[0, :n], atol=1e-5)
        assert (batch.tokens[b, n:] == 0).all()                        # zero padding
        assert (batch.positions[b, n:] == -1).all()


def test_straight_through_path_matches_boolean_path(merger):
    keeps = torch.stack([KEEP[0], torch.ones(N), torch.zeros(N).index_fill(0, torch.tensor([0]), 1)])
    x = torch.randn(3, N, D)
    soft = torch.rand(3, N, requires_grad=True)
    weight = keeps + soft - soft.detach()                              # value 0/1, gradient through soft
    st = merger(x, selection(keeps, weight))
    plain = merger(x, selection(keeps))
    assert torch.allclose(st.tokens, plain.tokens, atol=1e-5)
    st.tokens.pow(2).sum().backward()
    assert soft.grad is not None and torch.isfinite(soft.grad).all()
    assert (soft.grad[0, KEEP[0] == 0] != 0).any()                     # dropped tokens get a gradient too
    assert (soft.grad[0, KEEP[0] == 1] != 0).any()


def test_gather_kept_handles_all_kept_and_empty_rows():
    h = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    out = gather_kept(h, torch.tensor([[True, True, True, True], [False, True, False, True]]))
    assert out.tokens[:, :, 0].tolist() == [[0, 1, 2, 3], [5, 7, 0, 0]]
    assert out.positions.tolist() == [[0, 1, 2, 3], [1, 3, -1, -1]]


def loud_merger(grid=None, positions=True, dtype=torch.float64, seed=0) -> TokenMerger:
    """A merger with weights and biases large enough that every input and decision visibly moves the outputs."""
    torch.manual_seed(seed)
    m = TokenMerger(D, heads=2, layers=2, mlp_ratio=2, n_positions=N if positions else None, local_grid=grid)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p * 3 if p.dim() >= 2 else p + 0.3 * torch.randn_like(p))
    return m.to(dtype)


def mixed_keeps() -> torch.Tensor:
    """[5, N] decisions: a pattern, everything kept, one kept (first / last / middle position)."""
    keeps = torch.zeros(5, N, dtype=torch.bool)
    keeps[0] = KEEP[0].bool()
    keeps[1] = True
    keeps[2, 0] = keeps[3, N - 1] = keeps[4, 5] = True
    return keeps


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def run_both(m, x, keeps, straight_through: bool):
    """Kept-token path and reference on the same inputs: outputs, and the gradients of the same random loss
    with respect to every parameter, the features and (straight-through) the selection weights."""
    results = []
    for fn in (m, lambda x_, sel_: merge_all_tokens(m, x_, sel_)):
        xg = x.clone().requires_grad_(True)
        soft = torch.rand(keeps.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
        weight = keeps.to(x.dtype) + (soft - soft.detach()) if straight_through else keeps.to(x.dtype)
        out = fn(xg, selection(keeps, weight))
        g = torch.randn(out.tokens.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(4))
        m.zero_grad(set_to_none=True)
        (out.tokens * g * out.valid[..., None]).sum().backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        results.append((out, grads, xg.grad, soft.grad))
    return results


@pytest.mark.parametrize("grid,positions", [(None, True), ((3, 4), False)])
def test_kept_path_equals_all_token_reference_with_hard_decisions(grid, positions):
    m = loud_merger(grid, positions, torch.float32)
    x, keeps = torch.randn(5, N, D), mixed_keeps()
    (new, g_new, x_new, _), (ref, g_ref, x_ref, _) = run_both(m, x, keeps, straight_through=False)
    assert new.lengths.tolist() == ref.lengths.tolist() == [6, N, 1, 1, 1]
    assert torch.equal(new.positions, ref.positions)
    assert new.tokens.shape == ref.tokens.shape                        # padded to the largest count, not N
    assert (new.tokens - ref.tokens).abs().max() <= 1e-5
    assert new.full is None                                            # no dropped-position work
    assert g_new.keys() == g_ref.keys()
    for name in g_ref:
        assert relative_gap(g_new[name], g_ref[name]) <= 1e-5, name
    assert relative_gap(x_new, x_ref) <= 1e-5


@pytest.mark.parametrize("grid,positions", [(None, True), ((3, 4), False)])
def test_kept_path_equals_all_token_reference_with_straight_through_weights(grid, positions):
    m = loud_merger(grid, positions)
    x, keeps = torch.randn(5, N, D, dtype=torch.float64), mixed_keeps()
    (new, g_new, x_new, s_new), (ref, g_ref, x_ref, s_ref) = run_both(m, x, keeps, straight_through=True)
    assert (new.tokens - ref.tokens).abs().max() <= 1e-5
    assert (new.full - ref.full).abs().max() <= 1e-5                  # dropped positions too (values only)
    for name in g_ref:
        assert relative_gap(g_new[name], g_ref[name]) <= 1e-5, name
    assert relative_gap(x_new, x_ref) <= 1e-5
    assert (s_ref[~keeps] != 0).any() and (s_ref[keeps] != 0).any()   # every decision has a gradient ...
    assert relative_gap(s_new, s_ref) <= 1e-5                          # ... and the same one


def test_work_follows_the_kept_count():
    m = TokenMerger(64, heads=4, layers=2, mlp_ratio=4)
    x = torch.randn(2, 64, 64)

    def flops(keep, path):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            path(x, selection(keep))
        return counter.get_total_flops()

    quarter = torch.zeros(2, 64, dtype=torch.bool)
    quarter[:, ::4] = True
    everything = torch.ones(2, 64, dtype=torch.bool)
    reference = lambda x_, s_: merge_all_tokens(m, x_, s_)
    assert flops(everything, m) <= 1.01 * flops(everything, reference)
    assert flops(quarter, reference) >= 0.95 * flops(everything, reference)     # the reference: all positions
    assert flops(quarter, m) <= 0.45 * flops(everything, m)                      # kept-token path: ~1/4 + K/V
