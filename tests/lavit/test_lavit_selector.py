"""LaVIT token selector: straight-through Gumbel selection, deterministic inference, the minimum-kept guard
and the keep-ratio regulariser."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vlbridge.lavit.selector import TokenSelector, force_min_keep, ratio_loss

N, D = 10, 16


def make_selector(seed: int = 0) -> TokenSelector:
    torch.manual_seed(seed)
    return TokenSelector(D)


def test_global_half_makes_decisions_depend_on_the_whole_image():
    sel = make_selector()
    x = torch.randn(1, N, D)
    x2 = x.clone()
    x2[0, 9] += 3 * torch.randn(D)
    # token 0 did not change, but its log-probs do (the mean-pooled half sees token 9)
    assert not torch.allclose(sel.log_probs(x)[0, 0], sel.log_probs(x2)[0, 0])


def test_gumbel_is_hard_forward_soft_backward():
    sel = make_selector()
    x = torch.randn(2, N, D)
    g = torch.Generator().manual_seed(1)
    out = sel(x, "gumbel", tau=1.0, min_keep=0, generator=g)
    assert set(out.weight.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.weight.detach().bool(), out.keep)
    # the gradient is that of the soft Gumbel sample drawn with the same noise
    c = torch.randn(2, N)
    (out.weight * c).sum().backward()
    grads = [p.grad.clone() for p in sel.parameters()]
    sel.zero_grad()
    u = torch.rand((2, N, 2), generator=torch.Generator().manual_seed(1)).clamp_(1e-9, 1 - 1e-9)
    soft = F.softmax((sel.log_probs(x) - torch.log(-torch.log(u))) / 1.0, -1)[..., 0]
    assert torch.equal(soft > 0.5, out.keep)
    (soft * c).sum().backward()
    for a, p in zip(grads, sel.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
    assert any(a.abs().sum() > 0 for a in grads)


def test_argmax_is_deterministic_and_independent_of_the_batch():
    sel = make_selector()
    x = torch.randn(3, N, D)
    a, b = sel(x, "argmax"), sel(x, "argmax")
    assert torch.equal(a.keep, b.keep)
    lp = sel.log_probs(x)
    assert torch.equal(a.keep, force_min_keep(lp[..., 0] > lp[..., 1], lp[..., 0].exp(), 1))
    assert torch.equal(sel(x[1:2], "argmax").keep, a.keep[1:2])
    assert a.weight.grad_fn is None                                    # no straight-through path at inference


def test_sampling_is_seeded_and_follows_keep_probability():
    sel = make_selector()
    x = torch.randn(1, N, D).expand(4000, N, D)
    s1 = sel(x, "sample", min_keep=0, generator=torch.Generator().manual_seed(5))
    s2 = sel(x, "sample", min_keep=0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1.keep, s2.keep)
    freq = s1.keep.float().mean(0)
    assert torch.allclose(freq, s1.keep_prob[0].detach(), atol=0.04)


def test_min_keep_guards_against_dropping_everything():
    sel = make_selector()
    with torch.no_grad():
        sel.mlp[-1].bias.copy_(torch.tensor([-20.0, 20.0]))            # the selector wants to drop everything
    x = torch.randn(4, N, D)
    for mode in ("gumbel", "argmax", "sample"):
        out = sel(x, mode, min_keep=3, generator=torch.Generator().manual_seed(0))
        assert out.lengths.tolist() == [3, 3, 3, 3]
        top = out.keep_prob.detach().topk(3, dim=1).indices.sort(1).values
        assert torch.equal(out.keep.nonzero()[:, 1].view(4, 3), top)


def test_ratio_loss_value_and_direction():
    sel = make_selector()
    x = torch.randn(8, N, D)
    out = sel(x, "gumbel", min_keep=0)
    share = float(out.keep.float().mean())
    assert abs(float(ratio_loss(out, 0.25, 2.0).detach()) - 2.0 * (share - 0.25) ** 2) < 1e-6
    for target in (0.1, 0.5):                                          # gradient steps move the kept share
        s = make_selector()
        opt = torch.optim.Adam(s.parameters(), lr=0.02)
        before = float(s(x, "argmax", min_keep=0).keep.float().mean())
        for _ in range(40):
            opt.zero_grad()
            ratio_loss(s(x, "argmax", min_keep=0), target, 2.0).backward()
            opt.step()
        after = float(s(x, "argmax", min_keep=0).keep.float().mean())
        assert abs(after - target) < abs(before - target) - 0.1, (target, before, after)


def test_ratio_loss_still_acts_on_saturated_decisions():
    sel = make_selector()
    with torch.no_grad():
        sel.mlp[-1].bias.copy_(torch.tensor([30.0, -30.0]))            # p(keep) = 1 to float precision
    out = sel(torch.randn(4, N, D), "gumbel", min_keep=0)
    ratio_loss(out, 1 / 3, 2.0).backward()
    g = sel.mlp[-1].bias.grad
    assert g[0] > 0.5 and g[1] < -0.5                                  # pushes keep down, drop up


def test_annealed_noise_trains_on_the_inference_decisions():
    sel = make_selector()
    x = torch.randn(4, N, D)
    zero = sel(x, "gumbel", min_keep=0, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(zero.keep, sel(x, "argmax", min_keep=0).keep)
    assert zero.weight.requires_grad                                   # still a straight-through gradient
