"""Check suite: every training objective, built as ``fit`` builds it, against the closed forms.

Each case names an objective and its options and ``[train]`` settings, exactly as a config does;
``run.svi.make_svi`` turns it into the loss ``fit`` steps (the registry's objective, JIT-compiled or
not, or the free-bits objective), the KL weight comes from ``schedules.kl_weight`` at a given step
(checked against the value worked out by hand), and ``SVI``'s own ``loss_and_grads`` runs with the
arguments ``fit`` passes (``schedules.step_args``). On the linear-Gaussian model with an imperfect
diagonal guide, the expected loss is, per data point i (Kingma & Welling 2014; Kingma et al. 2016)::

    -(lambda_rec E_q[log p(x_i | z)] - lambda_KL KL(q(z | x_i) || p(z)))

with the KL summed, or, with free bits lambda, N sum_d max(lambda, KL_d) for the batch. Both terms
are in closed form (``analytic.py``), so the exact loss and, by autograd through the closed form
and the linear encoder and decoder, its exact gradient are known. Rows: the mean loss of repeated
calls, and the mean gradient along two fixed unit directions (the exact gradient's and a random
one), within 4 SE of the exact values. IWAE with K = 1 is the ELBO; for K > 1 its loss is compared
with ``marginal.log_marginal_likelihood``'s IWAE_K, and DReG's gradient (Tucker et al. 2019) with
the plain IWAE gradient: both estimate the same expectation.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_models import (
    diagonal_guide_params,
    fixed_gaussian,
    linear_vae,
    set_perturbed_diagonal_guide,
)
from pyro_vae.checks.stats import CheckRow, repeat, within_se, within_tol
from pyro_vae.config import Config, from_dict
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.infer.schedules import kl_weight, step_args
from pyro_vae.models.vae import VAE
from pyro_vae.run.svi import make_svi

STEPS_PER_EPOCH = 10  # the schedules are evaluated as if an epoch had this many steps
PARTICLES = 10
REPEATS = 30
IWAE_K = 10
FREE_BITS = "between"  # free bits lambda: between the two smallest per-dimension KLs


@dataclass(frozen=True)
class Case:
    """An objective as a config sets it, and the KL weight its schedule must give at ``step``
    (worked out by hand from the schedule's definition in schedules.py)."""

    label: str
    objective: str
    options: Dict = field(default_factory=dict)
    train: Dict = field(default_factory=dict)
    step: int = 0
    expected_kl_weight: float = 1.0


CASES = (
    Case("trace, jit", "trace", {"jit": True}),
    Case("trace, no jit", "trace", {"jit": False}),
    Case("meanfield, jit", "meanfield", {"jit": True}),
    Case("meanfield, no jit", "meanfield", {"jit": False}),
    Case(
        "trace, jit, beta 2, lambda_rec 0.5",
        "trace",
        {"jit": True},
        {"beta": 2.0, "reconstruction_weight": 0.5},
        0,
        2.0,
    ),
    # linear warm-up over 4 epochs of 10 steps, step 9: beta * 10 / 40
    Case(
        "meanfield, jit, warm-up step 10/40, beta 2",
        "meanfield",
        {"jit": True},
        {"beta": 2.0, "kl_warmup_epochs": 4},
        9,
        0.5,
    ),
    # cyclical, 20 steps in 2 cycles of 10 rising over 5: step 12 is 3 steps into cycle 2
    Case(
        "trace, jit, cyclical step 13/20",
        "trace",
        {"jit": True},
        {"kl_schedule": "cyclical", "epochs": 2, "kl_cycles": 2},
        12,
        0.6,
    ),
    Case("meanfield, free bits", "meanfield", {}, {"free_bits": FREE_BITS}),
    Case(
        "trace, free bits, beta 1.5",
        "trace",
        {},
        {"free_bits": FREE_BITS, "beta": 1.5},
        0,
        1.5,
    ),
    Case("iwae K=1 (the ELBO)", "iwae", {"num_particles": 1}),
    Case("iwae K=1, dreg", "iwae", {"num_particles": 1, "dreg": True}),
)


def case_config(truth: LinearGaussian, case: Case, train: Dict) -> Config:
    """The config of ``case`` for ``linear_vae(truth, "diagonal")`` on ``truth``'s device."""
    options = dict(case.options)
    if case.objective != "iwae":
        options["num_particles"] = PARTICLES
    return from_dict(
        {
            "model": {"latent_dim": truth.latent_dim, "hidden": []},
            "guide": {"name": "diagonal"},
            "likelihood": fixed_gaussian(truth.noise_scale),
            "objective": {"name": case.objective, **options},
            "train": {"device": str(truth.weight.device), **train},
        }
    )


def _params(vae: VAE) -> List[torch.Tensor]:
    return [p for p in vae.parameters() if p.requires_grad]


def exact_loss(
    vae: VAE, truth: LinearGaussian, x: torch.Tensor, kl_w: float, rec_w: float, nats
) -> torch.Tensor:
    """The closed-form expected loss, differentiable in the VAE's parameters: the decoder's W, b
    and the encoder's loc and scale enter ``analytic.py``'s formulas."""
    decoder = vae.decoder[0]
    model = LinearGaussian(decoder.weight, decoder.bias, truth.noise_scale)
    loc, scale = diagonal_guide_params(vae, x)
    variance = scale.pow(2)
    kl_d = -0.5 * (1 + variance.log() - loc.pow(2) - variance)  # (N, D)
    if nats is None:
        kl = kl_d.sum()
    else:
        kl = x.shape[0] * kl_d.mean(0).clamp(min=nats).sum()
    return -(rec_w * model.expected_log_likelihood(x, loc, scale).sum() - kl_w * kl)


def _draws(svi, args, params, times: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``times`` calls of SVI's ``loss_and_grads`` (what ``SVI.step`` runs): the losses (R,) and
    the flat gradients (R, P)."""
    losses, grads = [], []
    for _ in range(times):
        for p in params:
            p.grad = None
        losses.append(svi.loss_and_grads(svi.model, svi.guide, *args))
        grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
    return torch.tensor(losses, dtype=torch.float64), torch.stack(grads)


def _mean_se(draws: torch.Tensor) -> Tuple[float, float]:
    return draws.mean().item(), draws.std().item() / math.sqrt(len(draws))


def _directions(exact_grad: torch.Tensor, generator: torch.Generator) -> Dict:
    random = torch.randn(exact_grad.shape, generator=generator, dtype=exact_grad.dtype)
    return {
        "exact-gradient direction": exact_grad / exact_grad.norm(),
        "random direction": (random / random.norm()).to(exact_grad.device),
    }


def _run_case(vae, truth, x, case, generator) -> Tuple[List[CheckRow], Dict]:
    with torch.no_grad():
        loc, scale = diagonal_guide_params(vae, x)
    variance = scale.pow(2)
    kl_d = (-0.5 * (1 + variance.log() - loc.pow(2) - variance)).mean(0)
    train = dict(case.train)
    nats = None
    if train.get("free_bits") == FREE_BITS:
        nats = kl_d.sort().values[:2].mean().item()
        train["free_bits"] = nats
    config = case_config(truth, case, train)
    weight = kl_weight(config, case.step, STEPS_PER_EPOCH)
    rows = []
    if case.train:  # a schedule or beta: its weight at the step, against the hand value
        rows.append(
            within_tol(
                f"{case.label}: KL weight at step {case.step + 1}",
                weight,
                case.expected_kl_weight,
                1e-12,
            )
        )
    rec_w = config.train.reconstruction_weight
    svi, _ = make_svi(vae, config)
    params = _params(vae)
    losses, grads = _draws(svi, step_args(x, weight, rec_w), params, REPEATS)
    exact = exact_loss(vae, truth, x, weight, rec_w, nats)
    exact_grad = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(exact, params)]
    ).detach()
    n = x.shape[0]
    mean, se = _mean_se(losses / n)
    rows.append(within_se(f"{case.label}: loss / N", mean, exact.item() / n, se))
    directions = _directions(exact_grad, generator)
    for name, u in directions.items():
        mean, se = _mean_se(grads @ u)
        rows.append(
            within_se(
                f"{case.label}: d loss along {name}", mean, (exact_grad @ u).item(), se
            )
        )
    return rows, {"exact_grad": exact_grad, "directions": directions}


def objective_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """Every case of ``CASES``, then IWAE and DReG with K = ``IWAE_K``."""
    rows: List[CheckRow] = []
    directions = None
    for case in CASES:
        vae = linear_vae(truth, "diagonal")
        set_perturbed_diagonal_guide(vae, truth, generator)
        try:
            case_rows, info = _run_case(vae, truth, x, case, generator)
        finally:
            vae.release_params()
        rows += case_rows
        directions = directions or info["directions"]
    return rows + iwae_objective_checks(truth, x, generator, directions)


def iwae_objective_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator, directions: Dict
) -> List[CheckRow]:
    """With K = ``IWAE_K``: the iwae objective's loss against ``log_marginal_likelihood`` with K
    samples (both estimate -sum_i IWAE_K(x_i)); DReG's gradient against the plain IWAE gradient,
    along the directions of the ELBO cases (paired SE: the two estimators are independent).
    """
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator, widen=2.0)
    n = x.shape[0]
    try:
        params = _params(vae)
        results = {}
        for dreg in (False, True):
            case = Case("", "iwae", {"num_particles": IWAE_K, "dreg": dreg})
            svi, _ = make_svi(vae, case_config(truth, case, {}))
            results[dreg] = _draws(svi, step_args(x, 1.0, 1.0), params, REPEATS)
        mean_estimate, se_estimate = repeat(
            lambda: log_marginal_likelihood(
                vae.model, vae.guide, x, num_samples=IWAE_K
            ).log_marginal.sum(),
            REPEATS,
        )
    finally:
        vae.release_params()
    rows = []
    for dreg in (False, True):
        loss, loss_se = _mean_se(results[dreg][0] / n)
        rows.append(
            within_se(
                f"iwae K={IWAE_K}{', dreg' if dreg else ''}: loss / N vs -IWAE_{IWAE_K} "
                f"of log_marginal_likelihood",
                loss,
                -mean_estimate.item() / n,
                math.hypot(loss_se, se_estimate.item() / n),
            )
        )
    for name, u in directions.items():
        plain, plain_se = _mean_se(results[False][1] @ u)
        dreg, dreg_se = _mean_se(results[True][1] @ u)
        rows.append(
            within_se(
                f"iwae K={IWAE_K}: DReG vs plain gradient along {name}",
                dreg,
                plain,
                math.hypot(plain_se, dreg_se),
            )
        )
    return rows
