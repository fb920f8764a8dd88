"""The ``enum_meanfield`` objective against closed forms on a small model where y sums and z
integrates exactly: p(y) = pi, p(z | y) = N(mu_y, sp_y^2), p(x | y, z) = N(a z + c_y, sigma^2);
q(y | x) = softmax(logits), q(z | x, y) = N(m_y, s_y^2), in a subsampled plate and with
``poutine.scale`` on z. Loss and gradients: exact where x does not depend on z (a = 0), within
4 SE otherwise; the sites it must leave alone, and the orders it must refuse."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import config_enumerate

from pyro_vae.errors import ConfigError
from pyro_vae.infer.trace_enum_meanfield import TraceEnumMeanField_ELBO
from pyro_vae.registry import OBJECTIVES

K, N, B, D = 3, 7, 4, 2  # classes, rows, subsample, latent size
SIGMA = 0.8
SUBSAMPLE = torch.tensor([0, 2, 3, 6])


def parameters(seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def draw(*shape, spread=1.0):
        t = spread * torch.randn(*shape, generator=g, dtype=torch.float64)
        return t.requires_grad_()

    return dict(
        log_pi=draw(K),
        mu=draw(K, D),
        log_sp=draw(K, D, spread=0.3),
        c=draw(K, D),
        logits=draw(B, K),
        m=draw(K, B, D),
        log_s=draw(K, B, D, spread=0.3),
    )


X = torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def make(p, a: float, kl_weight: float = 1.0):
    def model():
        with pyro.plate("data", N, subsample=SUBSAMPLE):
            y = pyro.sample("y", dist.Categorical(logits=p["log_pi"]))
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(
                    "z", dist.Normal(p["mu"][y], p["log_sp"][y].exp()).to_event(1)
                )
            loc = a * z + p["c"][y]
            pyro.sample("x", dist.Normal(loc, SIGMA).to_event(1), obs=X[SUBSAMPLE])

    @config_enumerate
    def guide():
        with pyro.plate("data", N, subsample=SUBSAMPLE):
            y = pyro.sample("y", dist.Categorical(logits=p["logits"]))
            with poutine.scale(scale=kl_weight):
                rows = y.squeeze(-1)
                q = dist.Normal(p["m"][rows], p["log_s"][rows].exp())
                pyro.sample("z", q.to_event(1))

    return model, guide


def exact_elbo(p, a: float, kl_weight: float = 1.0) -> torch.Tensor:
    """The enumerated ELBO of the subsample, scaled by N / B, in closed form."""
    x = X[SUBSAMPLE]  # (B, D)
    r = p["logits"].log_softmax(-1)  # (B, K)
    m, s = p["m"].transpose(0, 1), p["log_s"].exp().transpose(0, 1)  # (B, K, D)
    mean_x = a * m + p["c"]
    recon = dist.Normal(mean_x, SIGMA).log_prob(x[:, None]) - a**2 * s**2 / (
        2 * SIGMA**2
    )
    kl = torch.distributions.kl_divergence(
        dist.Normal(m, s), dist.Normal(p["mu"], p["log_sp"].exp())
    )
    inner = p["log_pi"].log_softmax(-1) + recon.sum(-1) - kl_weight * kl.sum(-1) - r
    return N / B * (r.exp() * inner).sum()


def objective(name: str = "enum_meanfield", particles: int = 1):
    return OBJECTIVES.build(name, None, {"num_particles": particles})


def grads(loss, p):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(p.values()))])


@pytest.mark.parametrize("kl_weight,particles", [(1.0, 1), (0.3, 1), (0.3, 3)])
def test_loss_and_gradient_are_exact_when_x_does_not_depend_on_z(kl_weight, particles):
    p = parameters()
    model, guide = make(p, 0.0, kl_weight)
    elbo = objective(particles=particles)
    loss = elbo.differentiable_loss(model, guide)
    exact = exact_elbo(p, 0.0, kl_weight)
    assert elbo.replaced == ["z"]
    assert abs(loss.item() + exact.item()) < 1e-10
    assert torch.allclose(grads(loss, p), grads(-exact, p), atol=1e-10)
    # plain enum still carries the sampled term's noise here
    assert abs(objective("enum").loss(model, guide) + exact.item()) > 1e-3


def test_loss_and_gradient_are_unbiased_and_less_noisy_than_enum_far_from_the_posterior():
    """A random guide, far from p(z | x, y): here the closed-form KL removes more noise than
    enum's sampled z-term cancels (near the posterior it need not: benchmarks/README.md).
    """
    p = parameters(2)
    model, guide = make(p, 1.3, 0.7)
    exact = exact_elbo(p, 1.3, 0.7)
    exact_grad = grads(-exact, p)
    pyro.set_rng_seed(0)
    runs = [
        objective(particles=20).differentiable_loss(model, guide) for _ in range(40)
    ]
    losses = torch.stack([r.detach() for r in runs])
    se = losses.std() / math.sqrt(len(runs))
    assert abs(losses.mean() + exact) < 4 * se
    g = torch.stack([grads(r, p) for r in runs])
    g_se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - exact_grad).abs() < 4 * g_se + 1e-12).all()
    enum = objective("enum", 20)
    enum_se = torch.tensor([enum.loss(model, guide) for _ in range(40)]).std()
    assert se < 0.8 * enum_se / math.sqrt(40)


def assert_sampled_term_kept(model, guide) -> None:
    """No site replaced, and the loss is plain enum's at the same draws."""
    elbo = objective()
    pyro.set_rng_seed(3)
    loss = elbo.loss(model, guide)
    pyro.set_rng_seed(3)
    assert loss == objective("enum").loss(model, guide) and elbo.replaced == []


def test_a_site_without_a_registered_kl_keeps_the_sampled_term():
    """p(z) Cauchy: no KL(Normal || Cauchy), so the loss is plain enum's, draw for draw."""

    def model():
        with pyro.plate("data", 3):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(2)))
            pyro.sample("z", dist.Cauchy(0.0, 1.0))
            pyro.sample("x", dist.Normal(y.float(), 1.0), obs=torch.ones(3))

    @config_enumerate
    def guide():
        with pyro.plate("data", 3):
            pyro.sample("y", dist.Categorical(logits=torch.tensor([0.3, -0.2])))
            pyro.sample("z", dist.Normal(0.5, 2.0))

    with pytest.raises(NotImplementedError):
        torch.distributions.kl_divergence(dist.Normal(0.5, 2.0), dist.Cauchy(0.0, 1.0))
    assert_sampled_term_kept(model, guide)


def test_a_site_depending_on_a_model_enumerated_site_keeps_the_sampled_term():
    """p(z | w) with w enumerated by the model: the term sits inside the sum over w."""

    def model():
        with pyro.plate("data", 3):
            w = pyro.sample(
                "w",
                dist.Categorical(logits=torch.zeros(2)),
                infer={"enumerate": "parallel"},
            )
            pyro.sample("z", dist.Normal(w.float(), 1.0))

    def guide():
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(torch.zeros(3), 1.0))

    assert_sampled_term_kept(model, guide)


def test_a_guide_drawing_in_another_order_is_refused():
    """Model p(z2) p(z1 | z2), guide q(z1) q(z2 | z1): the bottom-up order."""

    def model():
        z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
        pyro.sample("z1", dist.Normal(z2, 1.0))

    def guide():
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        pyro.sample("z2", dist.Normal(z1, 1.0))

    with pytest.raises(ConfigError) as error:
        objective().loss(model, guide)
    message = str(error.value)
    assert "\n" not in message and "'z1' is drawn after 'z2'" in message
    assert "use objective 'enum'" in message


def test_a_site_scaled_differently_in_model_and_guide_is_refused():
    def model():
        with poutine.scale(scale=2.0):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match="scaled alike"):
        objective().loss(model, guide)


def test_it_is_registered_with_the_particles_option():
    elbo = objective(particles=3)
    assert isinstance(elbo, TraceEnumMeanField_ELBO) and elbo.num_particles == 3
    assert "enum_meanfield" in OBJECTIVES.names()


def test_on_the_semi_supervised_family_both_z_sites_take_the_closed_form():
    """M2 on a mixture with W = 0 and labelled and unlabelled rows: every z term is a KL, so
    the loss no longer depends on the draws (enum's does), and it is enum's in expectation.
    """
    from pyro_vae.checks.analytic_mixture import LinearGaussianMixture, random_mixture
    from pyro_vae.checks.enum_meanfield import set_random_z_guide
    from pyro_vae.checks.semi_supervised import linear_m2

    g = torch.Generator().manual_seed(0)
    truth = random_mixture(g)
    flat = LinearGaussianMixture(
        torch.zeros_like(truth.weight), truth.biases, truth.noise_scale, truth.log_pi
    )
    x, y = flat.sample(40, g)
    y[::2] = -1  # half the labels hidden
    rows = torch.cat([x, y[:, None].to(x)], -1)
    m2 = linear_m2(flat, "diagonal")
    try:
        set_random_z_guide(m2, g)
        elbo = objective()
        losses = [elbo.loss(m2.model, m2.guide, rows, 0.5) for _ in range(3)]
        assert elbo.replaced == ["z", "z_labelled"]
        assert max(losses) - min(losses) < 1e-9
        enum = objective("enum", 50)
        draws = torch.tensor(
            [enum.loss(m2.model, m2.guide, rows, 0.5) for _ in range(20)]
        )
        assert draws.std() > 1e-3
        assert abs(draws.mean() - losses[0]) < 4 * draws.std() / math.sqrt(len(draws))
    finally:
        m2.release_params()
