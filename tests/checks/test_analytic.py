"""The closed forms of ``analytic.py`` against independent computations, then the library's ELBO
estimators against the closed forms (through the check suites of ``pyro-vae check``), including
negative controls showing that those checks do fail when something is wrong. float64, fixed seeds.
"""

import ast
import math
from pathlib import Path

import pyro.infer
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyro_vae.checks import analytic as A
from pyro_vae.checks import analytic_models as M
from pyro_vae.checks import harness as C
from pyro_vae.checks import marginal as CM
from pyro_vae.checks import objectives as CO
from pyro_vae.checks import suites as S
from pyro_vae.infer.traces import log_weights

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of small tensor ops: on a machine shared by several jobs, torch's thread pool makes
    them many times slower than one thread does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def problem():
    """A random model with P = 5, D = 3, sigma = 0.7, 300 data points, an imperfect diagonal q."""
    generator = torch.Generator().manual_seed(1)
    truth = M.true_model(generator, data_dim=5, latent_dim=3, noise_scale=0.7)
    x = truth.sample(300, generator)
    mean, _ = truth.posterior(x)
    loc = mean + 0.3 * torch.randn(mean.shape, generator=generator, dtype=F64)
    scale = 0.2 + torch.rand(mean.shape, generator=generator, dtype=F64)
    return truth, x, loc, scale, generator


def test_gaussian_kl_matches_torch(problem):
    _, _, loc, scale, _ = problem
    expected = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(
        A.gaussian_kl_to_standard_normal(loc, scale), expected, rtol=0, atol=1e-12
    )


def test_posterior_matches_conditioning_the_joint_gaussian(problem):
    """Data-space form: mu = W^T C^{-1} (x - b), Sigma = I - W^T C^{-1} W, with C = W W^T + sigma^2 I."""
    truth, x, _, _, _ = problem
    w = truth.weight
    c_inv = torch.linalg.inv(w @ w.T + truth.noise_scale**2 * torch.eye(5, dtype=F64))
    mean, covariance = truth.posterior(x)
    assert torch.allclose(mean, (x - truth.bias) @ c_inv @ w, atol=1e-10)
    assert torch.allclose(
        covariance, torch.eye(3, dtype=F64) - w.T @ c_inv @ w, atol=1e-10
    )


def test_bayes_rule_holds_at_any_z(problem):
    """log p(x) = log p(z) + log p(x | z) - log p(z | x) for every z."""
    truth, x, _, _, generator = problem
    z = 2 * torch.randn(x.shape[0], 3, generator=generator, dtype=F64)
    joint = Normal(0.0, 1.0).log_prob(z).sum(-1)
    joint = joint + Normal(z @ truth.weight.T + truth.bias, truth.noise_scale).log_prob(
        x
    ).sum(-1)
    bayes = joint - truth.posterior_distribution(x).log_prob(z)
    assert torch.allclose(bayes, truth.log_marginal(x), rtol=0, atol=1e-10)


def test_log_marginal_by_quadrature():
    """With one latent dimension, p(x) = integral p(z) p(x | z) dz on a fine grid."""
    generator = torch.Generator().manual_seed(2)
    truth = M.true_model(generator, data_dim=4, latent_dim=1, noise_scale=0.6)
    x = truth.sample(20, generator)
    z = torch.linspace(-12, 12, 24001, dtype=F64)[:, None, None]
    log_joint = Normal(0.0, 1.0).log_prob(z[..., 0]) + Normal(
        z * truth.weight.T + truth.bias, truth.noise_scale
    ).log_prob(x).sum(-1)
    quadrature = torch.logsumexp(log_joint, 0) + math.log(24 / 24000)
    assert torch.allclose(quadrature, truth.log_marginal(x), rtol=0, atol=1e-8)


def test_elbo_against_plain_monte_carlo(problem):
    """E_q[log p(z) + log p(x | z) - log q(z | x)] from 20000 torch draws per point, within 4 SE."""
    truth, x, loc, scale, generator = problem
    x, loc, scale = x[:20], loc[:20], scale[:20]
    z = loc + scale * torch.randn(20000, *loc.shape, generator=generator, dtype=F64)
    log_w = (
        Normal(0.0, 1.0).log_prob(z).sum(-1)
        + Normal(z @ truth.weight.T + truth.bias, truth.noise_scale).log_prob(x).sum(-1)
        - Normal(loc, scale).log_prob(z).sum(-1)
    )
    stderr = log_w.std(0) / math.sqrt(20000)
    assert ((log_w.mean(0) - truth.elbo(x, loc, scale)).abs() < 4 * stderr).all()


def test_elbo_plus_kl_to_posterior_is_log_marginal(problem):
    truth, x, loc, scale, _ = problem
    elbo, kl = truth.elbo(x, loc, scale), truth.kl_to_posterior(x, loc, scale)
    assert torch.allclose(elbo + kl, truth.log_marginal(x), rtol=0, atol=1e-10)
    assert (kl > 1e-3).all()  # an imperfect q: the bound is strict


def test_elbo_grad_matches_autograd_and_vanishes_at_the_best_diagonal_q(problem):
    truth, x, loc, scale, _ = problem
    loc, log_scale = loc.clone().requires_grad_(), scale.log().requires_grad_()
    grads = torch.autograd.grad(
        truth.elbo(x, loc, log_scale.exp()).sum(), [loc, log_scale]
    )
    closed = truth.elbo_grad(x, loc.detach(), scale)
    for auto, exact in zip(grads, closed):
        assert torch.allclose(auto, exact, rtol=0, atol=1e-10)
        assert exact.abs().max() > 0.1
    # the best diagonal q: the posterior mean and s_j^2 = 1 / (posterior precision)_jj
    mean, covariance = truth.posterior(x)
    best_scale = torch.linalg.inv(covariance).diagonal().rsqrt().expand_as(mean)
    for grad in truth.elbo_grad(x, mean, best_scale):
        assert grad.abs().max() < 1e-10


@pytest.mark.parametrize("fixed_noise", [None, 0.7])
def test_ppca_closed_form_is_the_maximum_likelihood(problem, fixed_noise):
    truth, x, _, _, _ = problem
    solution = A.ppca_maximum_likelihood(x, 3, fixed_noise)
    ml = solution.model
    log_likelihood = ml.log_marginal(x).mean()
    assert log_likelihood.item() == pytest.approx(
        solution.mean_log_likelihood, abs=1e-10
    )
    if fixed_noise is None:
        assert ml.noise_scale**2 == pytest.approx(
            solution.eigenvalues[3:].mean().item(), rel=1e-12
        )
    assert solution.mean_log_likelihood > truth.log_marginal(x).mean().item()
    # a stationary point: zero gradient with respect to W, b (and log sigma when it is free)
    params = [
        ml.weight.clone().requires_grad_(),
        ml.bias.clone().requires_grad_(),
        ml.noise_scale.log().requires_grad_(),
    ]
    grads = torch.autograd.grad(
        A.LinearGaussian(*params[:2], params[2].exp()).log_marginal(x).mean(), params
    )
    for grad in grads[: 3 if fixed_noise is None else 2]:
        assert grad.abs().max() < 1e-8
    # and a maximum: random perturbations lower the likelihood
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        weight = ml.weight + 0.05 * torch.randn(
            ml.weight.shape, generator=generator, dtype=F64
        )
        perturbed = A.LinearGaussian(weight, ml.bias, ml.noise_scale)
        assert perturbed.log_marginal(x).mean() < log_likelihood


def test_invalid_arguments_are_refused_with_clear_messages():
    w, b = torch.zeros(4, 2, dtype=F64), torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError, match="noise_scale must be one positive number"):
        A.LinearGaussian(w, b, 0.0)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        A.LinearGaussian(w, torch.zeros(3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="weight must be a"):
        A.LinearGaussian(b, b, 1.0)
    with pytest.raises(
        ValueError, match="latent_dim must be between 1 and data_dim - 1 = 3"
    ):
        A.ppca_maximum_likelihood(torch.zeros(10, 4, dtype=F64), 4)
    truth = A.LinearGaussian(w, b, 1.0)
    with pytest.raises(ValueError, match="'diagonal' or 'full_rank'"):
        M.linear_vae(truth, "iaf")
    with pytest.raises(ValueError, match="linear 'full_rank' guide"):
        M.set_exact_posterior_guide(M.linear_vae(truth, "diagonal"), truth)


# -- the library's estimators against the closed forms ---------------------------------------------


def test_exact_posterior_guide_every_single_sample_elbo_is_log_marginal(problem):
    truth, x, _, _, _ = problem
    vae = M.linear_vae(truth, "full_rank")
    M.set_exact_posterior_guide(vae, truth)
    q = vae.encoder(x)
    mean, covariance = truth.posterior(x)
    assert torch.allclose(q.loc, mean, atol=1e-12)
    assert torch.allclose(
        q.covariance_matrix, covariance.expand_as(q.covariance_matrix), atol=1e-12
    )
    log_p = truth.log_marginal(x)
    assert ((log_weights(vae.model, vae.guide, 50, x) - log_p).abs() < 1e-6).all()
    for cls in (pyro.infer.Trace_ELBO, pyro.infer.TraceMeanField_ELBO):
        for _ in range(3):
            loss = cls(num_particles=1, max_plate_nesting=1).loss(
                vae.model, vae.guide, x
            )
            assert loss == pytest.approx(-log_p.sum().item(), abs=1e-6 * x.shape[0])


@pytest.mark.parametrize(
    "suite",
    [
        S.exact_posterior_checks,
        S.estimator_checks,
        CO.objective_checks,
        pytest.param(CM.iwae_checks, marks=pytest.mark.slow),
        CM.marginal_checks,
    ],
    ids=lambda suite: suite.__name__,
)
def test_library_estimators_match_closed_forms(problem, suite):
    truth, x, _, _, generator = problem
    rows = suite(truth, x, generator)
    failed = [row for row in rows if not row.passed]
    assert rows and not failed, C.format_table(failed)


def test_svi_training_recovers_the_ppca_maximum_likelihood():
    generator = torch.Generator().manual_seed(4)
    truth = M.true_model(generator, data_dim=6, latent_dim=2, noise_scale=0.5)
    x, held_out = truth.sample(1000, generator), truth.sample(200, generator)
    best = A.ppca_maximum_likelihood(x, 2, 0.5)
    learned = S.fit_linear_vae(x, held_out, 2, 0.5, epochs=40)
    gap = best.mean_log_likelihood - learned.log_marginal(x).mean().item()
    assert -1e-9 <= gap < 0.05
    # the marginal likelihood is flat near its maximum (0.02 nats per point allow W W^T to be ~20 %
    # off), so the likelihood, not W W^T, is the thing to compare


# -- negative controls: the checks detect a model that differs from the closed form ---------------


def _mismatched_linear_vae(monkeypatch, factor: float) -> None:
    """Make every VAE the checks build use a noise scale ``factor`` times the closed form's."""
    build = M.linear_vae

    def mismatched(truth, guide="full_rank"):
        return build(
            A.LinearGaussian(truth.weight, truth.bias, factor * truth.noise_scale),
            guide,
        )

    for module in (S, CO):
        monkeypatch.setattr(module, "linear_vae", mismatched)


@pytest.mark.slow
def test_checks_fail_when_the_vae_is_not_the_closed_form_model(problem, monkeypatch):
    truth, x, _, _, generator = problem
    _mismatched_linear_vae(monkeypatch, 1.02)
    exact_rows = S.exact_posterior_checks(truth, x, generator)
    estimator_rows = {
        row.quantity.split(" (")[0]: row
        for row in S.estimator_checks(truth, x, generator)
    }
    assert not any(row.passed for row in exact_rows)
    name = "max |log w + log q/p(z|x) - log p(x)| per draw"
    assert not estimator_rows[name].passed, name
    objective_rows = {
        row.quantity: row for row in CO.objective_checks(truth, x, generator)
    }
    for case in ("trace, jit", "meanfield, no jit", "trace, free bits, beta 1.5"):
        assert not objective_rows[f"{case}: loss / N"].passed, case


@pytest.mark.slow
def test_objective_checks_fail_for_a_wrong_closed_form_gradient(problem, monkeypatch):
    """Scale the closed form's gradient by 1.05 only (the loss value is kept): the gradient
    rows, not the loss rows, must fail."""
    truth, x, _, _, generator = problem
    exact = CO.exact_loss

    class ScaledGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            return value.clone()

        @staticmethod
        def backward(ctx, grad):
            return 1.05 * grad

    monkeypatch.setattr(
        CO, "exact_loss", lambda *args: ScaledGradient.apply(exact(*args))
    )
    rows = CO.objective_checks(truth, x, generator)
    assert all(row.passed for row in rows if row.quantity.endswith("loss / N"))
    along = [row for row in rows if "along exact-gradient direction" in row.quantity]
    assert sum(not row.passed for row in along) >= len(along) - 1


@pytest.mark.slow
def test_iwae_check_fails_for_a_bound_that_forgets_the_one_over_k(problem, monkeypatch):
    truth, x, _, _, generator = problem
    estimate = CM.log_marginal_likelihood

    def log_sum_exp(model, guide, x, num_samples):
        result = estimate(model, guide, x, num_samples=num_samples)
        result.log_marginal = result.log_marginal + math.log(num_samples)
        return result

    monkeypatch.setattr(CM, "log_marginal_likelihood", log_sum_exp)
    rows = {row.quantity: row for row in CM.iwae_checks(truth, x, generator)}
    assert rows["IWAE_1 / N = ELBO"].passed
    assert not any(
        rows[f"IWAE_{k} / N in (ELBO, log p(x)]"].passed for k in (10, 100, 1000)
    )


def test_log_weight_second_moment_against_monte_carlo(problem):
    """log E_q[w^2] / p(x)^2 = log E_q[(p(z|x) / q(z))^2] from 200000 torch draws, within 4 SE
    (delta method on the log), for a q wider than the posterior; +inf for a narrower one.
    """
    truth, x, loc, scale, generator = problem
    x, loc, scale = x[:10], loc[:10], scale[:10] + 1.0
    closed = truth.log_weight_second_moment(x, loc, scale)
    draws = 200_000
    z = loc + scale * torch.randn(draws, *loc.shape, generator=generator, dtype=F64)
    ratio = torch.exp(
        2
        * (
            truth.posterior_distribution(x).log_prob(z)
            - Normal(loc, scale).log_prob(z).sum(-1)
        )
    )
    estimate = ratio.mean(0)
    se = ratio.std(0) / math.sqrt(draws) / estimate
    assert ((estimate.log() - closed).abs() < 4 * se).all()
    assert (closed > 0.05).all()  # q differs from the posterior: E w^2 > p(x)^2
    narrow = truth.log_weight_second_moment(x, loc, 0.2 * scale.new_ones(scale.shape))
    assert torch.isinf(narrow).all()


def test_analytic_imports_torch_alone():
    """The ground truth must not import the library it checks: analytic.py's own imports are the
    standard library and torch (importing the package still runs ``pyro_vae/__init__``).
    """
    tree = ast.parse(Path(A.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or "").split(".")[0])
    module_level = {
        (n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0]
        for n in tree.body
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    assert module_level == {"math", "dataclasses", "typing", "torch"}, module_level
    assert imported == module_level, imported
