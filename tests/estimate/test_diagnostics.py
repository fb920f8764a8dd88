"""diagnostics.py against closed forms: ELBO terms, KL per dimension, active units (with negative
and positive controls for every guide), mutual information, rate and distortion."""

import json
import math

import pytest
import torch
from torch.distributions import MixtureSameFamily, Normal

from pyro_vae import config as cfg
from pyro_vae.checks.analytic import gaussian_kl_to_standard_normal
from pyro_vae.checks.analytic_models import (
    linear_vae,
    set_perturbed_diagonal_guide,
    softplus_inverse,
    true_model,
)
from pyro_vae.estimate import diagnostics
from pyro_vae.models.vae import LATENT, build
from pyro_vae.registry import GUIDES

X = (torch.rand(400, 10, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def small_vae(guide, hidden=(8,), latent_dim=6, data_dim=10, **options):
    overrides = {"model.latent_dim": latent_dim, "model.hidden": list(hidden)}
    overrides.update({"guide.name": guide, **options})
    return build(cfg.load(None, overrides), data_dim)


def unit_scale(encoder):
    """Make the Gaussian part's scale 1 for every x."""
    with torch.no_grad():
        if hasattr(encoder, "raw_scale"):
            encoder.raw_scale.weight.zero_()
            encoder.raw_scale.bias.fill_(softplus_inverse(torch.tensor(1.0)).item())
        else:
            encoder.raw_diag.weight.zero_()
            encoder.raw_diag.bias.fill_(softplus_inverse(torch.tensor(1.0)).item())
            encoder.off_diag.weight.zero_()
            encoder.off_diag.bias.zero_()


def x_independent(guide):
    """A guide whose q(z | x) ignores x: the trunk's first layer has zero weights, so the features
    (and everything computed from them: loc, scale, the flows) are constant; the flows get
    random non-identity parameters, q's scale is about 1."""
    vae = small_vae(guide)
    unit_scale(vae.encoder)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        vae.encoder.trunk[0].weight.zero_()
        for name, p in vae.encoder.named_parameters():
            if name.startswith("flows"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return vae


@pytest.mark.parametrize("guide", GUIDES.names())
def test_a_guide_that_ignores_x_has_no_active_units(guide):
    vae = x_independent(guide)
    result = diagnostics.active_units(vae, X)
    assert result["active_units"] == 0
    assert (result["activity"].abs() < 4 * result["activity_stderr"] + 1e-12).all()
    if guide in (
        "iaf",
        "planar",
    ):  # Monte Carlo means: their noise exceeds the threshold
        naive = diagnostics.posterior_means(vae, X).var(0)
        assert (naive > diagnostics.ACTIVE_THRESHOLD).sum() >= 3
        assert (result["noise"] > 0.5 * diagnostics.ACTIVE_THRESHOLD).all()


def test_the_negative_control_fails_without_the_noise_correction(monkeypatch):
    """Injected bug: Monte Carlo means treated as exact (noise 0), as before the fix."""
    vae = x_independent("iaf")
    moments = diagnostics.posterior_moments
    monkeypatch.setattr(
        diagnostics,
        "posterior_moments",
        lambda *a, **k: (moments(*a, **k)[0], torch.zeros(len(X), 6)),
    )
    assert diagnostics.active_units(vae, X)["active_units"] >= 3


def x_dependent(guide, k):
    """A linear-trunk guide whose loc depends on x in dimensions 0..k-1 only (loc_d = x_d), with
    unit scale and flows that do not depend on x (IAF: identity; planar: one constant flow
    acting on dimension 0 alone, monotone)."""
    vae = small_vae(guide, hidden=())
    unit_scale(vae.encoder)
    with torch.no_grad():
        vae.encoder.loc.weight.zero_()
        vae.encoder.loc.bias.zero_()
        vae.encoder.loc.weight[range(k), range(k)] = 1.0
        if guide == "planar":
            for flow in vae.encoder.flows:
                last = flow.nn.layers[-1]
                last.weight.zero_()
                last.bias.zero_()
                last.bias[1 + 6] = 1.0  # outputs (b, u, w): u = 0, w = e_0
    return vae


@pytest.mark.parametrize("guide", GUIDES.names())
def test_known_number_of_active_units_is_found(guide):
    vae = x_dependent(guide, k=3)
    result = diagnostics.active_units(vae, X)
    assert result["active_units"] == 3
    exact = X[:, :3].var(0).double()  # Var_x(E_q[z_d | x]) when loc_d = x_d
    if (
        guide == "planar"
    ):  # dimension 0 goes through a flow: only the other two are exact
        exact, got, se = exact[1:], result["activity"][1:3], result["activity_stderr"]
        se = se[1:3]
    else:
        got, se = result["activity"][:3], result["activity_stderr"][:3]
    assert ((got - exact).abs() <= 4 * se + 1e-9).all()


# -- ELBO terms and KL per dimension on the linear-Gaussian model --------------------------------


@pytest.fixture
def linear():
    truth = true_model(torch.Generator().manual_seed(7))
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, torch.Generator().manual_seed(9))
    x = truth.sample(30, torch.Generator().manual_seed(8))
    return truth, vae, x


def elbo_z_scores(vae, x, truth, repeats=40):
    runs = [diagnostics.elbo_terms(vae, x, num_samples=50) for _ in range(repeats)]
    q = vae.encoder(x).base_dist
    exact = {
        "reconstruction": truth.expected_log_likelihood(x, q.loc, q.scale),
        "kl": gaussian_kl_to_standard_normal(q.loc, q.scale),
        "elbo": truth.elbo(x, q.loc, q.scale),
    }
    z = {}
    for key, value in exact.items():
        draws = torch.stack([r[key] for r in runs])
        se = draws.std(0) / math.sqrt(repeats)
        z[key] = ((draws.mean(0) - value) / se).abs().max().item()
    return z


def test_elbo_terms_agree_with_the_closed_form_within_4_se(linear):
    truth, vae, x = linear
    z = elbo_z_scores(vae, x, truth)
    assert all(v < 4 for v in z.values()), z


def test_elbo_terms_check_catches_a_kl_scaled_by_1_1(linear, monkeypatch):
    """Injected bug: the guide's log-density inflated by 10%."""
    truth, vae, x = linear
    traces = diagnostics.vectorized_traces

    def inflated(*args, **kwargs):
        model_trace, guide_trace = traces(*args, **kwargs)
        guide_trace.nodes[LATENT]["log_prob"] = (
            1.1 * guide_trace.nodes[LATENT]["log_prob"]
        )
        return model_trace, guide_trace

    monkeypatch.setattr(diagnostics, "vectorized_traces", inflated)
    z = elbo_z_scores(vae, x, truth)
    assert z["kl"] > 4, z


def test_diagonal_kl_per_dimension_is_closed_form_and_sums_to_the_kl(linear):
    truth, vae, x = linear
    values, method = diagnostics.kl_per_dimension_with_method(vae, x)
    q = vae.encoder(x).base_dist
    per_dim = -0.5 * (1 + q.scale.pow(2).log() - q.loc.pow(2) - q.scale.pow(2))
    torch.testing.assert_close(values, per_dim.mean(0))
    torch.testing.assert_close(
        values.sum(), gaussian_kl_to_standard_normal(q.loc, q.scale).mean()
    )
    assert method.startswith("closed form") and "sums to the KL" in method


def quadrature_kl(q: Normal, p, d: int) -> torch.Tensor:
    """KL(q_d || p_d) per row by the trapezoid rule on a fine grid (float64), for a mixture
    of diagonal Gaussians ``p`` with ``logits`` (K,), ``locs`` and ``scales`` (K, D)."""
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    loc, scale = q.loc[:, d].double(), q.scale[:, d].double()
    log_q = Normal(loc[:, None], scale[:, None]).log_prob(grid)
    p_d = MixtureSameFamily(
        torch.distributions.Categorical(logits=p.logits.double()),
        Normal(p.locs[:, d].double(), p.scales[:, d].double()),
    )
    log_p = p_d.log_prob(grid)
    return torch.trapezoid(log_q.exp() * (log_q - log_p), grid, dim=-1)


def test_mixture_prior_kl_per_dimension_by_monte_carlo_matches_quadrature():
    vae = small_vae("diagonal", latent_dim=2, **{"prior.name": "mixture"})
    x = X[:50]
    runs = torch.stack(
        [diagnostics.kl_per_dimension_with_method(vae, x)[0] for _ in range(20)]
    )
    method = diagnostics.kl_per_dimension_with_method(vae, x)[1]
    assert method.startswith("Monte Carlo") and "does not sum" in method
    with torch.no_grad():
        q, p = vae.encoder(x).base_dist, vae.prior()
        exact = torch.stack([quadrature_kl(q, p, d).mean() for d in range(2)])
    se = runs.std(0).double() / math.sqrt(len(runs))
    assert ((runs.mean(0).double() - exact).abs() < 4 * se).all(), (runs.mean(0), exact)


def test_monte_carlo_kl_per_dimension_bounds_its_memory_by_the_mixture_size():
    """Rows per chunk = max_elements // (draws x latent_dim x components): 3200 // 320 = 10."""
    vae = small_vae(
        "diagonal",
        latent_dim=2,
        **{"prior.name": "mixture", "prior.num_components": 10},
    )
    sizes = []
    encoder_forward = vae.encoder.forward
    vae.encoder.forward = lambda x: sizes.append(len(x)) or encoder_forward(x)
    diagnostics.kl_per_dimension_with_method(vae, X[:50], max_elements=3200)
    assert sizes[0] == 1 and max(sizes[1:]) == 10 and sum(sizes[1:]) == 50


@pytest.mark.parametrize(
    "guide,prior", [("iaf", "standard_normal"), ("diagonal", "flow")]
)
def test_kl_per_dimension_says_when_it_is_not_defined(guide, prior):
    vae = small_vae(guide, **{"prior.name": prior})
    values, method = diagnostics.kl_per_dimension_with_method(vae, X[:5])
    assert values is None and method.startswith("not defined")
    assert ("guide" if guide == "iaf" else "prior") in method


def test_full_rank_kl_per_dimension_uses_the_marginals():
    vae = small_vae("full_rank", latent_dim=3)
    values, method = diagnostics.kl_per_dimension_with_method(vae, X[:20])
    q = vae.encoder(X[:20])
    sd = q.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    expected = -0.5 * (1 + sd.pow(2).log() - q.loc.pow(2) - sd.pow(2))
    torch.testing.assert_close(values, expected.mean(0))
    assert "does not sum" in method


# -- mutual information --------------------------------------------------------------------------


def gaussian_encoder_vae(guide, a, s):
    """q(z | x) = N(a x, s^2) on one-dimensional data and latent space."""
    vae = small_vae(
        guide, hidden=(), latent_dim=1, data_dim=1, **{"likelihood.name": "gaussian"}
    )
    with torch.no_grad():
        vae.encoder.loc.weight.fill_(a)
        vae.encoder.loc.bias.zero_()
        vae.encoder.raw_scale.weight.zero_()
        vae.encoder.raw_scale.bias.fill_(softplus_inverse(torch.tensor(s)).item())
    return vae


XS = torch.randn(2000, 1, generator=torch.Generator().manual_seed(5))


@pytest.mark.filterwarnings("ignore:ConditionalAutoRegressiveNN input_dim = 1")
@pytest.mark.parametrize("guide", ["diagonal", "iaf"])  # iaf at its identity init
def test_mutual_information_matches_the_gaussian_closed_form(guide):
    a, s = 0.8, 0.6
    x = XS if guide == "diagonal" else XS[:400]  # the flow's inverse is slower
    vae = gaussian_encoder_vae(guide, a, s)
    result = diagnostics.mutual_information(vae, x)
    exact = 0.5 * math.log(1 + a**2 * x.var(unbiased=False).item() / s**2)
    assert abs(result["mutual_information"] - exact) < 4 * result["stderr"], result
    assert result["stderr"] < 0.1 and result["points"] == len(x)
    # a^2 + s^2 = 1: q(z) is nearly N(0, 1), so nearly all of the KL is information
    kl = diagnostics.elbo_terms(vae, x, num_samples=20)["kl"]
    assert abs(result["mutual_information"] - kl.mean().item()) < 0.05


def test_mutual_information_check_catches_max_instead_of_logsumexp(monkeypatch):
    """Injected bug: the aggregate posterior's log-density taken as the largest term."""
    a, s = 0.8, 0.6
    vae = gaussian_encoder_vae("diagonal", a, s)
    monkeypatch.setattr(torch, "logsumexp", lambda t, dim: t.max(dim).values)
    result = diagnostics.mutual_information(vae, XS)
    exact = 0.5 * math.log(1 + a**2 * XS.var(unbiased=False).item() / s**2)
    assert abs(result["mutual_information"] - exact) > 4 * result["stderr"]


def test_a_guide_that_ignores_x_carries_no_information():
    vae = gaussian_encoder_vae("diagonal", 0.0, 0.6)
    result = diagnostics.mutual_information(vae, XS[:300])
    assert abs(result["mutual_information"]) < 1e-5


def test_mutual_information_is_none_for_a_guide_without_a_density_at_any_z():
    assert diagnostics.mutual_information(small_vae("planar"), X[:20]) is None


def test_rate_and_distortion_are_the_mean_kl_and_negative_reconstruction():
    terms = {
        "kl": torch.tensor([1.0, 3.0]),
        "reconstruction": torch.tensor([-5.0, -7.0]),
    }
    assert diagnostics.rate_distortion(terms) == {"rate": 2.0, "distortion": 6.0}


# -- what evaluate reports and prints ------------------------------------------------------------


class Split:
    def __init__(self, x):
        self.x = x

    def split(self, name):
        return self.x


def evaluate_linear(widen, tmp_path, monkeypatch, capsys):
    """``pyro-vae evaluate`` on the linear-Gaussian model with the exact posterior mean and
    diagonal scales ``widen`` times the posterior marginal sd."""
    from pyro_vae.cli.app import main
    from pyro_vae.run import loading

    truth = true_model(torch.Generator().manual_seed(7))
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(
        vae, truth, torch.Generator().manual_seed(9), spread=0.0, widen=widen
    )
    x = truth.sample(30, torch.Generator().manual_seed(8))
    monkeypatch.setattr(loading, "load_run", lambda *a, **k: (None, vae, Split(x)))
    assert main(["evaluate", str(tmp_path), "--num-samples", "2000"]) == 0
    result = json.loads((tmp_path / "evaluation.json").read_text())
    return result, capsys.readouterr().out


def test_evaluate_flags_unreliable_standard_errors(tmp_path, monkeypatch, capsys):
    result, out = evaluate_linear(0.25, tmp_path, monkeypatch, capsys)
    assert result["khat_max"] > 0.7 and result["khat_frac_above_0.7"] > 0.5
    assert result["khat_mean"] <= result["khat_max"]
    assert "UNRELIABLE standard error" in out


def test_evaluate_reports_reliable_errors_and_the_information(
    tmp_path, monkeypatch, capsys
):
    result, out = evaluate_linear(2.0, tmp_path, monkeypatch, capsys)
    assert result["khat_max"] < 0.5 and result["khat_frac_above_0.7"] == 0.0
    assert "no k-hat above 0.7" in out and "UNRELIABLE" not in out
    assert (
        "errors reliable" not in out
    )  # k-hat alone does not vouch for a standard error
    assert f"{result['khat_near_0.7']} of 30 images within the fit's noise" in out
    assert (
        result["mutual_information"] > 0 and result["mutual_information_points"] == 30
    )
    assert f"I(x; z) {result['mutual_information']:.2f}" in out
    assert f"at most log 30 = {math.log(30):.2f}" in out
    assert result["kl_per_dim_method"].startswith("closed form")
    assert len(result["activity"]) == len(result["activity_stderr"]) == 2
