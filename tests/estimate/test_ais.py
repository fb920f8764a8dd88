"""Annealed importance sampling, BDMC and the amortization gap against the linear-Gaussian model's
closed forms; each safety net is shown to catch an injected bug."""

import json

import pytest
import torch

from pyro_vae.checks import ais as ais_checks
from pyro_vae.checks.analytic_models import (
    linear_vae,
    set_exact_posterior_guide,
    set_perturbed_diagonal_guide,
    true_model,
)
from pyro_vae.cli.app import main
from pyro_vae.errors import ConfigError
from pyro_vae.estimate import ais, amortization


def _linear(latent_dim=5, guide="diagonal", spread=ais_checks.SPREAD, seed=0):
    generator = torch.Generator().manual_seed(seed)
    truth = true_model(generator, 2 * latent_dim + 4, latent_dim, noise_scale=1.0)
    x = truth.sample(ais_checks.NUM_POINTS, generator)
    vae = linear_vae(truth, guide)
    if guide == "diagonal":
        set_perturbed_diagonal_guide(vae, truth, generator, spread=spread)
    else:
        set_exact_posterior_guide(vae, truth)
    return truth, x, vae


def test_schedules_run_from_zero_to_one_and_increase():
    for kind in ais.SCHEDULES:
        betas = ais.schedule(50, kind)
        assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 51
        assert (betas.diff() > 0).all()
    sig = ais.schedule(50, "sigmoid")
    assert sig[1] < 1 / 50  # the sigmoid path starts more slowly than the linear one
    with pytest.raises(ValueError, match="schedule"):
        ais.schedule(10, "cosine")
    with pytest.raises(ValueError, match="at least 1"):
        ais.schedule(0)


def test_exact_posterior_proposal_makes_every_weight_exact():
    """With r = p(z | x), f_t = p(z | x) p(x)^beta_t: every increment is (beta_t -
    beta_{t-1}) log p(x), so forward and reverse AIS give log p(x) to float64 precision.
    """
    truth, x, vae = _linear(3, "full_rank")
    exact = truth.log_marginal(x)
    fwd = ais.annealed_importance_sampling(
        vae.model, vae.guide, x, num_steps=5, num_chains=4
    )
    z = truth.posterior_distribution(x).sample()
    rev = ais.annealed_importance_sampling(
        vae.model, vae.guide, x, num_steps=5, num_chains=4, reverse_from=z
    )
    assert (fwd.log_marginal - exact).abs().max() < 1e-8
    assert (rev.log_marginal - exact).abs().max() < 1e-8
    assert (
        fwd.model_evals == 1 + 4 * 5
    )  # T - 1 transitions of 5 leapfrog steps, + start


def test_exact_identity_catches_a_wrong_temperature_increment(monkeypatch):
    truth, x, vae = _linear(3, "full_rank")
    monkeypatch.setattr(
        ais, "_increment", lambda b0, b, lj, lr: (b**2 - b0**2) * 0.9 * (lj - lr)
    )
    fwd = ais.annealed_importance_sampling(
        vae.model, vae.guide, x, num_steps=5, num_chains=4
    )
    assert (fwd.log_marginal - truth.log_marginal(x)).abs().max() > 1e-3


@pytest.mark.slow
def test_ais_check_rows_all_pass():
    rows = ais_checks.ais_checks("cpu")
    failed = [r.quantity for r in rows if not r.passed]
    assert not failed, failed
    names = " ".join(r.quantity for r in rows)
    for d in (1, 5, 20):
        assert f"D={d}" in names
    assert "BDMC" in names and "IS from the prior" in names


@pytest.mark.parametrize(
    "bug",
    ["no_metropolis", "increment_scaled"],
)
@pytest.mark.slow
def test_accuracy_and_bdmc_rows_catch_injected_bugs(bug, monkeypatch):
    """Dropping the Metropolis test (every leapfrog proposal kept, step sizes adapted as
    usual), or weights 5% off the right temperature increment: the rows fail."""
    if bug == "no_metropolis":
        monkeypatch.setattr(ais, "_select", lambda accept, proposed, current: proposed)
    else:
        right = ais._increment
        monkeypatch.setattr(
            ais, "_increment", lambda b0, b, lj, lr: 1.05 * right(b0, b, lj, lr)
        )
    truth, x, vae = _linear(5)
    rows = ais_checks.accuracy_rows(truth, x, vae, ais_checks.STEPS[5])
    rows += ais_checks.bdmc_rows(truth, vae, ais_checks.NUM_POINTS, 30)
    assert not all(r.passed for r in rows), [(r.quantity, r.estimate) for r in rows]


def test_reverse_bound_sits_above_forward_on_simulated_data():
    truth, _, vae = _linear(2)
    x, z = ais.simulate(vae.model, 30, truth.data_dim, dtype=torch.float64)
    assert x.shape == (30, truth.data_dim) and z.shape == (30, 2)
    fwd, rev = ais.bdmc(vae.model, vae.guide, x, z, num_steps=50, num_chains=8)
    exact = truth.log_marginal(x)
    assert (fwd.log_marginal <= rev.log_marginal + 4 * (fwd.stderr + rev.stderr)).all()
    assert abs(fwd.log_marginal.mean() - exact.mean()) < 0.1
    assert abs(rev.log_marginal.mean() - exact.mean()) < 0.1
    assert ((fwd.acceptance > 0.3) & (fwd.acceptance < 1)).all()


@pytest.mark.slow
def test_local_q_reaches_the_best_diagonal_elbo():
    """The best diagonal q for the linear-Gaussian posterior: m = mu(x), s_j^2 = 1 / Lambda_jj
    (``analytic.elbo_grad``). The local SVI fit reaches its ELBO within 4 SE; the encoder's ELBO
    matches the closed form; with no optimization steps the local check fails."""
    truth, x, vae = _linear(5, spread=0.3)
    mean, covariance = truth.posterior(x)
    best_scale = torch.linalg.inv(covariance).diagonal().rsqrt().expand_as(mean)
    best = truth.elbo(x, mean, best_scale).mean().item()
    q = vae.encoder(x).base_dist
    amortized = truth.elbo(x, q.loc, q.scale).mean().item()

    def check(steps):
        out = amortization.amortization_gap(vae.model, vae.guide, x, steps=steps)
        se = out["local_elbo_stderr"].pow(2).sum().sqrt().item() / len(x)
        elbo_se = out["elbo_stderr"].pow(2).sum().sqrt().item() / len(x)
        assert abs(out["elbo"].mean().item() - amortized) < 4 * elbo_se
        return abs(out["local_elbo"].mean().item() - best) < 4 * se

    assert check(500)
    assert not check(0)
    assert all(p.grad is None for p in vae.decoder.parameters())  # left as they were
    assert best - amortized > 1.0  # the encoder was deliberately poor


def test_amortization_gap_needs_a_diagonal_guide():
    _, x, vae = _linear(2, "full_rank")
    with pytest.raises(ConfigError, match="diagonal"):
        amortization.amortization_gap(vae.model, vae.guide, x, steps=1)


@pytest.mark.slow
def test_evaluate_method_both_writes_ais_bdmc_and_gaps(tmp_path, capsys):
    run = tmp_path / "run"
    fast = ["--epochs", "1", "--latent-dim", "2", "--set", "model.hidden=[16]"]
    assert main(["train", *fast, "--out", str(run), "--no-progress"]) == 0
    args = ["evaluate", str(run), "--num-samples", "20", "--limit", "8"]
    ais_args = ["--ais-steps", "10", "--ais-chains", "4", "--bdmc", "4"]
    assert main([*args, "--method", "both", *ais_args, "--amortization-gap"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    a = result["ais"]
    assert a["num_steps"] == 10 and a["num_chains"] == 4
    assert set(a["bdmc"]) >= {"forward", "reverse", "gap"}
    gaps = a["amortization"]
    total = gaps["approximation_gap"] + gaps["amortization_gap"]
    assert abs(total - (a["value"] - gaps["elbo"])) < 1e-6
    assert result["log_marginal"] is not None
    out = capsys.readouterr().out
    assert "AIS (T=10, M=4)" in out and "BDMC" in out and "amortization" in out
    assert main([*args, "--method", "ais", "--ais-steps", "5"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["log_marginal"] is None
    assert (run / "bound_ladder.png").stat().st_size > 0
    assert main([*args, "--ais-steps", "0", "--method", "ais"]) == 2
    assert main([*args, "--amortization-gap"]) == 2
    assert "--amortization-gap need" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ais_check_rows_pass_on_cuda():
    rows = ais_checks.ais_checks("cuda")
    assert all(r.passed for r in rows), [r.quantity for r in rows if not r.passed]
