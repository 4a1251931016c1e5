"""LaVIT quantizer: EMA codebook updates (hand-computed), commitment loss and straight-through gradient,
k-means initialisation, dead-code restarts, padding, and the usage statistics."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vlbridge.lavit.quantizer import EMAQuantizer, spherical_kmeans, usage


def quantizer(size: int = 4, code_dim: int = 3, decay: float = 0.9) -> EMAQuantizer:
    torch.manual_seed(0)
    return EMAQuantizer(in_dim=5, code_dim=code_dim, size=size, decay=decay, commitment=0.25, dead_ratio=0.1)


def test_ema_update_matches_hand_computation():
    q = quantizer()
    q.initialised.fill_(True)
    cs0, es0, cb0 = q.cluster_size.clone(), q.embed_sum.clone(), q.codebook.clone()
    z = F.normalize(torch.randn(6, 3), dim=-1)
    ids = torch.tensor([0, 0, 1, 1, 1, 3])
    q.ema_update(z, ids)
    counts = torch.tensor([2.0, 3.0, 0.0, 1.0])
    sums = torch.stack([z[:2].sum(0), z[2:5].sum(0), torch.zeros(3), z[5]])
    assert torch.allclose(q.cluster_size, 0.9 * cs0 + 0.1 * counts)
    assert torch.allclose(q.embed_sum, 0.9 * es0 + 0.1 * sums)
    assert torch.allclose(q.codebook, F.normalize(q.embed_sum, dim=-1), atol=1e-6)
    assert torch.allclose(q.codebook[2], cb0[2], atol=1e-6)            # unused code keeps its direction


def test_forward_updates_only_in_training_and_ignores_padding():
    q = quantizer()
    q.initialised.fill_(True)
    x = torch.randn(2, 3, 5)
    before = q.codebook.clone()
    q.eval()(x)
    assert torch.equal(q.codebook, before)                             # inference never moves the codebook
    valid = torch.tensor([[True, True, False], [True, False, False]])
    q.train()(x, valid)
    ref = quantizer()
    ref.initialised.fill_(True)
    z = ref.encode(x)[valid].detach()
    ref.ema_update(z, ref.lookup(z))
    assert torch.allclose(q.codebook, ref.codebook, atol=1e-6)         # same as updating with the valid rows only


def test_commitment_and_straight_through():
    q = quantizer()
    q.initialised.fill_(True)
    x = torch.randn(7, 5, requires_grad=True)
    out = q.eval()(x)
    assert torch.allclose(out.q, q.codebook[out.ids], atol=1e-6)       # forward value = the code
    assert torch.equal(out.ids, (out.z @ q.codebook.T).argmax(-1))     # nearest by cosine
    expected = 0.25 * ((out.z - q.codebook[out.ids]) ** 2).sum() / 7
    assert torch.allclose(out.commitment, expected, atol=1e-6)
    g = torch.randn_like(out.q)
    (gx,) = torch.autograd.grad((out.q * g).sum(), x, retain_graph=True)
    (gz,) = torch.autograd.grad((out.z * g).sum(), x)
    assert torch.allclose(gx, gz, atol=1e-6)                           # identity gradient through quantization
    assert not q.codebook.requires_grad


def test_kmeans_recovers_separated_directions():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4)
    x = F.normalize(centres.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 4, generator=g), dim=-1)
    c = spherical_kmeans(x, 4, generator=g)
    sims = c @ centres.T
    assert (sims.max(0).values > 0.99).all()                           # every true direction has a centroid
    q = EMAQuantizer(4, 4, 4)
    q.kmeans_init(x, generator=g)
    assert bool(q.initialised)
    assert torch.allclose(q.cluster_size.sort().values, torch.full((4,), 50.0))


def test_first_training_batch_initialises_by_kmeans():
    q = quantizer()
    assert not bool(q.initialised)
    q.train()(torch.randn(40, 5))
    assert bool(q.initialised)


def test_dead_codes_restart_on_recent_vectors():
    q = quantizer(size=6)
    q.initialised.fill_(True)
    q.cluster_size.copy_(torch.tensor([10.0, 10.0, 10.0, 10.0, 0.01, 0.0]))
    assert q.dead_codes().tolist() == [False] * 4 + [True, True]
    z = F.normalize(torch.randn(5, 3), dim=-1)
    assert q.restart_dead(z, torch.Generator().manual_seed(0)) == 2
    assert not q.dead_codes().any()
    for i in (4, 5):
        assert torch.isclose((z @ q.codebook[i]).max(), torch.tensor(1.0), atol=1e-6)  # moved onto a vector of z
    assert q.restart_dead(z) == 0


def test_usage_statistics():
    u = usage(torch.tensor([0, 1, 2, 3] * 5), 8)
    assert math.isclose(u["perplexity"], 4.0, rel_tol=1e-9)
    assert (u["used"], u["unused"], u["n"]) == (4, 4, 20)
    assert math.isclose(usage(torch.tensor([2] * 9), 8)["perplexity"], 1.0)
