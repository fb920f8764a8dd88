"""``pyro-vae check`` rows for annealed importance sampling (``ais.py``) against closed forms.

On linear-Gaussian models built with the library's parts (``analytic.linear_vae``, float64) with an
imperfect diagonal encoder as the proposal:

* AIS is within 4 SE of the exact mean log p(x) for latent dimension 1, 5 and 20;
* its error shrinks as the number of annealing steps T grows;
* from a deliberately poor proposal (the prior), AIS beats IS given the same number of model
  evaluations (IS gets three per AIS evaluation, since a gradient costs about two forward passes);
* on data simulated from the model, forward AIS <= exact <= reverse AIS (BDMC, Grosse et al. 2015),
  each within 4 SE, and the two bounds are less than ``BDMC_GAP`` nats apart.

The SE of a mean over points is sqrt(sum of the per-point delta-method variances) / N.
"""

from typing import List

import pyro
import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_models import (
    linear_vae,
    set_perturbed_diagonal_guide,
    true_model,
)
from pyro_vae.checks.stats import NUM_SE, CheckRow, within_se
from pyro_vae.estimate.ais import (
    annealed_importance_sampling,
    bdmc,
    mean_stderr,
    simulate,
)
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.vae import OBSERVED
from pyro_vae.process import resolve_device

SEED = 0
NUM_POINTS = 20
CHAINS = 16
LEAPFROG = 5
STEPS = {1: 30, 5: 100}  # annealing steps per latent dimension (data dim 2D + 4)
LADDER = (2, 10, 100)  # ... and for D = 20, which also checks convergence in T
LADDER_DIM = 20
SPREAD = 0.1  # the encoder's relative perturbation from the exact posterior mean map
BDMC_GAP = 0.5
IS_PER_EVAL = 3


def _setup(latent_dim: int, generator: torch.Generator, device: torch.device):
    truth = true_model(generator, 2 * latent_dim + 4, latent_dim, noise_scale=1.0)
    x = truth.sample(NUM_POINTS, generator).to(device)
    truth = truth.to(device)
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator, spread=SPREAD)
    return truth, x, vae


def _ais(vae, x, steps: int, **kwargs):
    return annealed_importance_sampling(
        vae.model,
        vae.guide,
        x,
        num_steps=steps,
        num_chains=CHAINS,
        leapfrog_steps=LEAPFROG,
        **kwargs,
    )


def accuracy_rows(
    truth: LinearGaussian, x: torch.Tensor, vae, steps: int
) -> List[CheckRow]:
    """AIS from the encoder within 4 SE of the exact mean log p(x)."""
    est = _ais(vae, x, steps)
    d = truth.latent_dim
    return [
        within_se(
            f"AIS (T={steps}, M={CHAINS}, acc {est.acceptance.mean():.2f}), D={d}: mean log p(x)",
            est.log_marginal.mean().item(),
            truth.log_marginal(x).mean().item(),
            mean_stderr(est.stderr),
        )
    ]


def convergence_rows(truth: LinearGaussian, x: torch.Tensor, vae) -> List[CheckRow]:
    """Along ``LADDER``, the error |exact - AIS| never grows by more than 4 SE from one rung to the
    next, falls by more than 4 SE from the first rung to the last, and ends within 4 SE.
    """
    exact = truth.log_marginal(x).mean().item()
    ests = [_ais(vae, x, t) for t in LADDER]
    errors = [abs(exact - e.log_marginal.mean().item()) for e in ests]
    ses = [mean_stderr(e.stderr) for e in ests]
    d = truth.latent_dim
    rows = []
    for i, j in [(i, i + 1) for i in range(len(LADDER) - 1)] + [(0, len(LADDER) - 1)]:
        se = (ses[i] ** 2 + ses[j] ** 2) ** 0.5
        drop = errors[i] - errors[j]
        strict = j - i > 1 or len(LADDER) == 2
        rows.append(
            CheckRow(
                f"AIS D={d}: |error| at T={LADDER[i]} minus |error| at T={LADDER[j]}",
                drop,
                0.0,
                se,
                drop > NUM_SE * se if strict else drop > -NUM_SE * se,
                f"> {NUM_SE:g} SE" if strict else f"> -{NUM_SE:g} SE",
            )
        )
    rows.append(
        within_se(
            f"AIS D={d}, T={LADDER[-1]}: mean log p(x)",
            ests[-1].log_marginal.mean().item(),
            exact,
            ses[-1],
        )
    )
    return rows


def poor_proposal_rows(
    truth: LinearGaussian, x: torch.Tensor, vae, steps: int
) -> List[CheckRow]:
    """From the prior as proposal: AIS (its error reported) more than 4 SE above IS with three
    samples per AIS model evaluation."""
    exact = truth.log_marginal(x).mean().item()
    est = _ais(vae, x, steps, proposal="prior")
    prior_guide = pyro.poutine.block(vae.model, hide=[OBSERVED])
    k = IS_PER_EVAL * est.model_evals * CHAINS
    imp = log_marginal_likelihood(vae.model, prior_guide, x, num_samples=k)
    ais_mean, is_mean = est.log_marginal.mean().item(), imp.log_marginal.mean().item()
    se = (mean_stderr(est.stderr) ** 2 + mean_stderr(imp.stderr) ** 2) ** 0.5
    d = truth.latent_dim
    return [
        CheckRow(
            f"AIS from the prior, D={d}, T={steps}: {est.model_evals * CHAINS} evals/point",
            ais_mean,
            exact,
            mean_stderr(est.stderr),
            True,
            "(reported)",
        ),
        CheckRow(
            f"AIS minus IS from the prior, D={d}, IS K={k}",
            ais_mean - is_mean,
            0.0,
            se,
            ais_mean - is_mean > NUM_SE * se,
            f"> {NUM_SE:g} SE",
        ),
    ]


def bdmc_rows(truth: LinearGaussian, vae, num: int, steps: int) -> List[CheckRow]:
    """Forward <= exact <= reverse on ``num`` points simulated from the model."""
    x, z = simulate(vae.model, num, truth.data_dim, x_device(truth), torch.float64)
    exact = truth.log_marginal(x).mean().item()
    fwd, rev = bdmc(
        vae.model,
        vae.guide,
        x,
        z,
        num_steps=steps,
        num_chains=CHAINS,
        leapfrog_steps=LEAPFROG,
    )
    f, r = fwd.log_marginal.mean().item(), rev.log_marginal.mean().item()
    sf, sr = mean_stderr(fwd.stderr), mean_stderr(rev.stderr)
    d = truth.latent_dim
    return [
        CheckRow(
            f"BDMC D={d} T={steps}: forward <= exact",
            f,
            exact,
            sf,
            f < exact + NUM_SE * sf,
            f"forward < exact + {NUM_SE:g} SE",
        ),
        CheckRow(
            f"BDMC D={d} T={steps}: reverse >= exact",
            r,
            exact,
            sr,
            r > exact - NUM_SE * sr,
            f"reverse > exact - {NUM_SE:g} SE",
        ),
        CheckRow(
            f"BDMC D={d} T={steps}: reverse - forward",
            r - f,
            0.0,
            0.0,
            -NUM_SE * (sf**2 + sr**2) ** 0.5 < r - f < BDMC_GAP,
            f"-{NUM_SE:g} SE < gap < {BDMC_GAP:g} nats",
        ),
    ]


def x_device(truth: LinearGaussian) -> torch.device:
    return truth.weight.device


def ais_checks(device="cpu") -> List[CheckRow]:
    """Every AIS row above, seeded (the caller restores global RNG state)."""
    dev = resolve_device(str(device))
    pyro.set_rng_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    rows: List[CheckRow] = []
    vaes = []
    try:
        for d, steps in STEPS.items():
            truth, x, vae = _setup(d, generator, dev)
            vaes.append(vae)
            rows += accuracy_rows(truth, x, vae, steps)
        rows += bdmc_rows(truth, vae, NUM_POINTS, steps)
        truth, x, vae = _setup(LADDER_DIM, generator, dev)
        vaes.append(vae)
        rows += convergence_rows(truth, x, vae)
        rows += poor_proposal_rows(truth, x, vae, LADDER[-1])
    finally:
        for vae in vaes:
            vae.release_params()
    return rows


def ais_suite(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """``ais_checks`` as one of ``checks.SUITES`` (it builds its own models and data, on the
    device of ``x``)."""
    return ais_checks(x.device)
