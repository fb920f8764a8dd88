"""The library's own densities against quadrature, closed forms and torch where torch is right."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.parts import continuous_bernoulli as CB
from pyro_vae.parts import distributions as D
from pyro_vae.parts.continuous_bernoulli import (
    ContinuousBernoulliLogits,
    cb_cdf,
    cb_log_norm,
)
from pyro_vae.parts.distributions import DiagonalNormalMixture

BIG = [0.0, 1e-4, 1e-2, 0.0999, 0.1001, 1.0, 16.0, 20.0, 50.0, 100.0, 1e3]
LOGITS = BIG + [-v for v in BIG[1:]]


def gauss_legendre(panels: int = 1000, points: int = 16):
    """Composite Gauss-Legendre nodes and weights on [0, 1] (float64)."""
    x, w = np.polynomial.legendre.leggauss(points)
    edges = np.linspace(0.0, 1.0, panels + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    nodes = ((edges[:-1, None] + edges[1:, None]) / 2 + half * x).ravel()
    return torch.tensor(nodes), torch.tensor((half * w).ravel())


def cb_moments(logits: torch.Tensor):
    """(integral of p, integral of x p) over [0, 1] by quadrature, in float64."""
    x, w = gauss_legendre()
    d = ContinuousBernoulliLogits(logits=logits[:, None])
    density = d.log_prob(x.to(logits.dtype)[None, :]).double().exp()
    return (density * w).sum(-1), (density * w * x).sum(-1)


# ---- continuous Bernoulli -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_integrates_to_one_at_every_logit(dtype):
    total, _ = cb_moments(torch.tensor(LOGITS, dtype=dtype))
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_mean_is_the_integral_of_x_p(dtype):
    logits = torch.tensor(LOGITS, dtype=dtype)
    _, first_moment = cb_moments(logits)
    mean = ContinuousBernoulliLogits(logits=logits).mean.double()
    torch.testing.assert_close(mean, first_moment, rtol=0, atol=1e-5)


def test_the_integral_check_catches_a_clamped_normaliser(monkeypatch):
    """Inject torch's clamped normaliser: the quadrature check must fail at large logits."""

    def clamped(logits):
        torch_cb = torch.distributions.ContinuousBernoulli(logits=logits)
        return torch_cb._cont_bern_log_norm() + torch.nn.functional.softplus(logits)

    monkeypatch.setattr(CB, "cb_log_norm", clamped)
    total, _ = cb_moments(torch.tensor([50.0]))
    assert abs(total.item() - 1) > 0.5  # 0.32 in float32


def test_log_normaliser_equals_its_closed_form_in_float64():
    # math.log(l / tanh(l / 2)) has no cancellation for 1e-3 <= l <= 700 in float64
    values = [1e-3, 0.05, 0.0999, 0.1, 0.1001, 0.5, 3.0, 16.0, 50.0, 300.0, 700.0]
    logits = torch.tensor(values + [-v for v in values], dtype=torch.float64)
    expected = torch.tensor(
        [math.log(abs(v) / math.tanh(abs(v) / 2)) for v in logits.tolist()],
        dtype=torch.float64,
    )
    torch.testing.assert_close(cb_log_norm(logits), expected, rtol=1e-14, atol=0)
    assert cb_log_norm(torch.tensor(0.0)).item() == pytest.approx(math.log(2), 1e-7)
    assert cb_log_norm(torch.tensor(1e4)).item() == pytest.approx(math.log(1e4), 1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_normaliser_has_its_gradient_past_torchs_clamp(dtype):
    # d/dl log(l / tanh(l/2)) = 1/l - 1/sinh(l): 0.02 at l = 50
    logits = torch.tensor([50.0, -50.0, 1e-3, 0.0], dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(cb_log_norm(logits).sum(), logits)
    expected = [1 / 50, -1 / 50, 1e-3 / 6, 0.0]  # l/6 near 0
    torch.testing.assert_close(
        grad.double(), torch.tensor(expected, dtype=torch.float64)
    )
    clamped = torch.tensor(50.0, requires_grad=True)
    torch_cb = torch.distributions.ContinuousBernoulli(logits=clamped)
    (torch_grad,) = torch.autograd.grad(
        torch_cb._cont_bern_log_norm() + torch.nn.functional.softplus(clamped), clamped
    )
    assert abs(torch_grad.item() - 1 / 50) > 0.01  # what the fix is for


def test_continuous_bernoulli_agrees_with_torch_where_torch_is_right():
    # torch is exact for 0.1 <= |l| <= 10 (away from its clamp and its Taylor band at 0)
    logits = torch.linspace(0.1, 10, 25, dtype=torch.float64)
    logits = torch.cat([logits, -logits])[:, None]
    x = torch.rand(50, dtype=torch.float64)
    ours = ContinuousBernoulliLogits(logits=logits)
    theirs = torch.distributions.ContinuousBernoulli(logits=logits)
    close = dict(rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), **close)
    torch.testing.assert_close(ours.mean, theirs.mean, **close)
    torch.testing.assert_close(ours.variance, theirs.variance, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(ours.entropy(), theirs.entropy(), **close)
    torch.testing.assert_close(ours.cdf(x), theirs.cdf(x), **close)
    torch.testing.assert_close(ours.icdf(x), theirs.icdf(x), **close)


def test_icdf_inverts_the_cdf_at_extreme_logits():
    logits = torch.tensor([-1e3, -40.0, -1e-5, 0.0, 1e-5, 3.0, 40.0, 1e3])[:, None]
    u = torch.linspace(0.01, 0.99, 9, dtype=torch.float64)
    d = ContinuousBernoulliLogits(logits=logits.double())
    x = d.icdf(u)
    assert ((x >= 0) & (x <= 1)).all()
    torch.testing.assert_close(d.cdf(x), u.expand_as(x), rtol=0, atol=1e-9)


def test_rsample_follows_the_cdf_and_its_gradient_gives_the_variance():
    """Kolmogorov-Smirnov distance of 4000 draws (1% critical value 1.63 / sqrt(n)); and the
    reparameterization gradient: E[dx/dl] = d E[x] / dl = Var[x], within 4 standard errors.
    """
    torch.manual_seed(0)
    n = 4000
    logits = torch.tensor(
        [-1e3, -30.0, -3.0, -1e-5, 0.0, 2.0, 40.0, 1e3], dtype=torch.float64
    )
    leaf = logits.expand(n, 8).clone().requires_grad_()  # one logit per draw
    d = ContinuousBernoulliLogits(logits=leaf)
    x = d.rsample()
    assert x.shape == (n, 8) and ((x >= 0) & (x <= 1)).all()
    sorted_x = x.detach().sort(0).values
    ecdf = (torch.arange(n, dtype=torch.float64)[:, None] + 0.5) / n
    ks = (cb_cdf(logits, sorted_x) - ecdf).abs().max(0).values
    assert (ks < 1.63 / math.sqrt(n)).all(), ks
    (dx_dl,) = torch.autograd.grad(x.sum(), leaf)  # dx/dl of each draw
    se = dx_dl.std(0) / math.sqrt(n)
    variance = ContinuousBernoulliLogits(logits=logits).variance
    assert ((dx_dl.mean(0) - variance).abs() <= 4 * se + 1e-12).all()


# ---- mixture of diagonal Gaussians ----------------------------------------------------------


def mixture_pair(dtype, shift: float = 0.0, k: int = 7, d: int = 5):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(k, generator=g, dtype=dtype)
    locs = 3 * torch.randn(k, d, generator=g, dtype=dtype) + shift
    scales = 0.01 + 0.5 * torch.rand(k, d, generator=g, dtype=dtype)
    reference = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1)
    )
    return DiagonalNormalMixture(logits, locs, scales), reference


def test_diagonal_mixture_equals_mixture_same_family_in_float64():
    ours, reference = mixture_pair(torch.float64)
    g = torch.Generator().manual_seed(2)
    near = ours.locs + 1e-3 * torch.randn(
        ours.locs.shape, generator=g, dtype=torch.float64
    )
    z = torch.cat(
        [
            torch.randn(10, 5, generator=g, dtype=torch.float64),
            1e3 * torch.randn(4, 5, generator=g, dtype=torch.float64),  # |z| >> sigma
            near,
        ]
    )
    torch.testing.assert_close(
        ours.log_prob(z), reference.log_prob(z), rtol=1e-5, atol=0
    )
    zz = z[:12].reshape(3, 4, 5)  # particles x data points
    torch.testing.assert_close(
        ours.log_prob(zz), reference.log_prob(zz), rtol=1e-5, atol=0
    )
    assert ours.log_prob(zz).shape == (3, 4)


def far_components_error(dtype) -> float:
    """Largest error (nats) of the log-density, in ``dtype``, of points near components at
    distance 300 from each other with scales 0.01, against the float64 reference on the same
    (rounded to ``dtype``) inputs."""
    mix64, _ = mixture_pair(torch.float64, k=2)
    locs = mix64.locs.clone()
    locs[0] += 150
    locs[1] -= 150
    z = locs + 0.02 * torch.randn(2, 5, dtype=torch.float64)
    logits, locs, scales, z = (
        t.to(dtype) for t in (mix64.logits, locs, torch.full_like(locs, 0.01), z)
    )
    reference = dist.MixtureSameFamily(
        dist.Categorical(logits=logits.double()),
        dist.Normal(locs.double(), scales.double()).to_event(1),
    )
    ours = DiagonalNormalMixture(logits, locs, scales).log_prob(z)
    return (ours.double() - reference.log_prob(z.double())).abs().max().item()


def test_diagonal_mixture_keeps_float32_precision_far_from_the_origin():
    # float32 rounding of log-densities of ~ +170 nats alone is ~1e-5
    assert far_components_error(torch.float32) < 1e-3


def test_the_precision_check_catches_a_float32_quadratic_form(monkeypatch):
    monkeypatch.setattr(D, "ACCUMULATE", torch.float32)
    assert far_components_error(torch.float32) > 1e-2


def test_diagonal_mixture_samples_have_the_mixture_moments():
    torch.manual_seed(0)
    ours, _ = mixture_pair(torch.float64, k=3, d=2)
    n = 20000
    z = ours.sample((n,))
    assert z.shape == (n, 2)
    se = z.std(0) / math.sqrt(n)
    assert ((z.mean(0) - ours.mean).abs() < 4 * se).all()
    # under a plate the mixture is expanded like any Pyro distribution
    assert ours.expand((6,)).log_prob(z[:6]).shape == (6,)


# ---- the Normals with fewer operations --------------------------------------------------------


def _reference_log_q_and_grads(loc, scale, log_prob):
    """log N(z; loc, scale) at a reparameterized draw z = loc + scale eps, and its gradients with
    respect to loc and scale, as ``log_prob(distribution, z)`` computes them."""
    loc, scale = loc.clone().requires_grad_(), scale.clone().requires_grad_()
    d = D.ReparameterizedNormal(loc, scale)
    torch.manual_seed(7)
    z = d.rsample((3,))
    value = log_prob(d, z)
    grads = torch.autograd.grad(value.sum(), (loc, scale), allow_unused=True)
    return (value, *(torch.zeros_like(loc) if g is None else g for g in grads))


def _torch_general(d, z):
    return torch.distributions.Normal(d.loc, d.scale).log_prob(z)


def _matches_torch(log_prob) -> bool:
    loc = torch.tensor([[0.3, -2.0, 5.0]], dtype=torch.float64)
    scale = torch.tensor([[0.01, 1.0, 7.5]], dtype=torch.float64)
    ours = _reference_log_q_and_grads(loc, scale, log_prob)
    theirs = _reference_log_q_and_grads(loc, scale, _torch_general)
    return all(
        torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(ours, theirs)
    )


def test_reparameterized_normal_at_its_draw_equals_torchs_density_and_gradients():
    """At its own draw the eps form gives torch's log density and the same total gradients
    with respect to loc and scale (the path through z included); elsewhere it is torch's.
    """
    assert _matches_torch(lambda d, z: d.log_prob(z))
    d = D.ReparameterizedNormal(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.1]))
    z = d.rsample((4,))
    other = z.detach() + 0.25  # not the draw: torch's general formula
    assert torch.equal(d.log_prob(other), _torch_general(d, other))
    assert d.log_prob(z).shape == z.shape
    expanded = d.expand((5, 2))  # Pyro's plates expand: the copy keeps the fast path
    assert type(expanded) is D.ReparameterizedNormal
    w = expanded.rsample()
    assert torch.allclose(expanded.log_prob(w), _torch_general(expanded, w))


def test_the_density_check_catches_a_wrong_log_scale_term_or_a_stale_eps():
    def log_scale_with_the_wrong_sign(d, z):
        return -0.5 * d._draw[1].pow(2) + d.scale.log() - D.HALF_LOG_2PI

    def eps_from_a_stale_draw(
        d, z
    ):  # the eps of another draw: wrong value, right shape
        return -0.5 * d._draw[1].roll(1, -1).pow(2) - d.scale.log() - D.HALF_LOG_2PI

    assert not _matches_torch(log_scale_with_the_wrong_sign)
    assert not _matches_torch(eps_from_a_stale_draw)


def test_reparameterized_normal_draws_eager_normal_rsamples_numbers():
    loc, scale = torch.randn(6, 4), torch.rand(6, 4) + 0.1
    torch.manual_seed(3)
    ours = D.ReparameterizedNormal(loc, scale).rsample((2,))
    torch.manual_seed(3)
    theirs = torch.distributions.Normal(loc, scale).rsample((2,))
    assert torch.equal(ours, theirs)


def test_unit_normal_is_the_standard_normal_in_every_method():
    like = torch.zeros(3, 5, dtype=torch.float64)
    ours, theirs = D.UnitNormal(like), torch.distributions.Normal(like, like + 1)
    z = torch.linspace(-30, 30, 15, dtype=torch.float64).reshape(3, 5)
    assert torch.allclose(ours.log_prob(z), theirs.log_prob(z), rtol=1e-14, atol=0)
    q = dist.Normal(
        torch.randn(3, 5, dtype=torch.float64),
        torch.rand(3, 5, dtype=torch.float64) + 0.5,
    )
    kl = torch.distributions.kl_divergence(q.to_event(1), ours.to_event(1))
    exact = 0.5 * (q.scale**2 + q.loc**2 - 1 - 2 * q.scale.log()).sum(-1)
    assert torch.allclose(kl, exact, rtol=1e-14, atol=0)
    expanded = ours.expand((4, 3, 5))
    assert type(expanded) is D.UnitNormal and expanded.batch_shape == (4, 3, 5)
    assert torch.allclose(expanded.log_prob(z), theirs.log_prob(z).expand(4, 3, 5))
    assert ours.mean.dtype == torch.float64 and torch.equal(ours.stddev, like + 1)
