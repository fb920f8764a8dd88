"""``pyro-vae check`` rows for the ``hierarchical`` family against the two-layer linear-Gaussian
closed form (``analytic_hierarchy.py``), for bottom-up, ladder and coupled inference (Tomczak &
Welling's q(z_2 | x) q(z_1 | x, z_2) with p(x | z_1, z_2); the closed form's decoder gives z_2 a
zero weight, which the family can hold):

* exact guide (bottom-up: full-rank factors q(z_1 | x) q(z_2 | z_1); coupled: full-rank
  q(z_2 | x) q(z_1 | x, z_2) by Gaussian conditioning; ladder: the diagonal
  precision-weighted merge on a model where it is exact): log w = log p(x) draw by draw, and the
  loss of Trace_ELBO (JIT on and off) and IWAE (plain and DReG) is -sum log p(x);
* an imperfect diagonal guide: the Monte Carlo ELBO (log w over draws) and Trace_ELBO's loss
  within 4 SE of the closed-form ELBO = log p(x) - KL(q(z_1, z_2 | x) || p(z_1, z_2 | x));
  TraceMeanField_ELBO's too (ladder and coupled: the family refuses it for bottom-up, where it is
  biased; SE from independent repeats); ELBO <= IWAE_10 <= log p(x);
  importance-sampled log p(x) and AIS over both layers within 4 SE of the exact value.

A dropped layer's KL, a merge with the wrong precision, or a coupled q(z_1 | x, z_2) that does
not see z_2 breaks the exact rows and the ELBO rows (``tests/checks/test_hierarchy.py`` injects
them). The rows use their own seeded models and data
(the harness's one-layer ``truth`` is not used).
"""

import math
from typing import List

import torch

from pyro_vae.checks.analytic_hierarchy import LinearHierarchy, random_hierarchy
from pyro_vae.checks.hierarchy_models import (
    guide_joint,
    linear_hierarchy,
    set_exact_bottom_up,
    set_exact_coupled,
    set_exact_ladder,
    set_perturbed_guide,
)
from pyro_vae.checks.stats import EXACT_TOL, CheckRow, repeat, within_se, within_tol
from pyro_vae.estimate.ais import annealed_importance_sampling, mean_stderr
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.infer.schedules import step_args
from pyro_vae.infer.traces import log_weights
from pyro_vae.registry import OBJECTIVES

SEED = 28
NUM_POINTS = 100
DRAWS = 200  # guide draws per point for the Monte Carlo ELBO
IS_SAMPLES = 2000
AIS_STEPS, AIS_CHAINS = 100, 16
# objectives whose loss with the exact guide is -sum log p(x) draw by draw (TraceMeanField's
# closed-form KL is exact only in expectation: it is checked against the ELBO below)
OBJECTIVES_CHECKED = (
    ("trace", {"jit": True}),
    ("trace", {"jit": False}),
    ("iwae", {"num_particles": 5}),
    ("iwae", {"num_particles": 5, "dreg": True}),
)


def _label(name: str, options: dict) -> str:
    return ", ".join([name] + [f"{k}={v}" for k, v in options.items()])


def exact_rows(
    truth: LinearHierarchy, x: torch.Tensor, inference: str
) -> List[CheckRow]:
    """With the exact posterior as guide, log w = log p(x) for every draw and every objective."""
    guide = "diagonal" if inference == "ladder" else "full_rank"
    family = linear_hierarchy(truth, inference, guide)
    setters = {"bottom_up": set_exact_bottom_up, "coupled": set_exact_coupled}
    setters.get(inference, set_exact_ladder)(family, truth)
    exact = truth.log_marginal(x)
    tag = f"hierarchical {inference}, exact guide"
    try:
        with torch.no_grad():
            log_w = log_weights(family.model, family.guide, 100, x)
        worst = (log_w - exact).abs().max().item()
        rows = [
            within_tol(f"{tag}: max |log w - log p(x)|, 100 draws/point", worst, 0.0)
        ]
        for name, options in OBJECTIVES_CHECKED:
            loss = OBJECTIVES.build(name, None, options).loss_and_grads(
                family.model, family.guide, *step_args(x, 1.0)
            )
            rows.append(
                within_tol(
                    f"{tag}: {_label(name, options)}: -loss / N",
                    -loss / x.shape[0],
                    exact.mean().item(),
                    EXACT_TOL,
                )
            )
    finally:
        family.release_params()
    return rows


def estimator_rows(
    truth: LinearHierarchy, x: torch.Tensor, inference: str, generator: torch.Generator
) -> List[CheckRow]:
    """An imperfect diagonal guide against the closed-form ELBO and log p(x)."""
    family = linear_hierarchy(truth, inference)
    set_perturbed_guide(family, truth, generator)
    n, tag = x.shape[0], f"hierarchical {inference}, diagonal guide"
    exact = truth.log_marginal(x).mean().item()
    elbo = truth.elbo(x, *guide_joint(family, truth, x)).mean().item()
    try:
        with torch.no_grad():
            log_w = log_weights(family.model, family.guide, DRAWS, x)
        se = (log_w.var(0) / DRAWS).sum().sqrt().item() / n
        rows = [
            within_se(
                f"{tag}: MC ELBO, {DRAWS} draws/point", log_w.mean().item(), elbo, se
            )
        ]
        trace = OBJECTIVES.build("trace", None, {"num_particles": DRAWS, "jit": False})
        loss = trace.loss(family.model, family.guide, *step_args(x, 1.0))
        rows.append(within_se(f"{tag}: Trace_ELBO -loss / N", -loss / n, elbo, se))
        if inference in ("ladder", "coupled"):
            meanfield = OBJECTIVES.build("meanfield", None, {"num_particles": 10})
            mean, mf_se = repeat(
                lambda: -meanfield.loss(family.model, family.guide, *step_args(x, 1.0))
                / n,
                20,
            )
            rows.append(
                within_se(
                    f"{tag}: TraceMeanField -loss / N", mean.item(), elbo, mf_se.item()
                )
            )
        iwae = torch.logsumexp(log_w.reshape(-1, 10, n), 1) - math.log(10)
        iwae_se = (iwae.var(0) / iwae.shape[0]).sum().sqrt().item() / n
        value = iwae.mean().item()
        rows.append(
            CheckRow(
                f"{tag}: IWAE_10 between the ELBO and log p(x)",
                value,
                exact,
                iwae_se,
                elbo - 4 * iwae_se < value < exact + 4 * iwae_se and elbo < exact,
                "ELBO - 4 SE < IWAE_10 < log p(x) + 4 SE",
            )
        )
        est = log_marginal_likelihood(family.model, family.guide, x, IS_SAMPLES)
        khat = est.khat[torch.isfinite(est.khat)]
        rows.append(
            within_se(
                f"{tag}: IS log p(x), K={IS_SAMPLES} (k-hat max {khat.max():.2f})",
                est.log_marginal.mean().item(),
                exact,
                mean_stderr(est.stderr),
            )
        )
        ais = annealed_importance_sampling(
            family.model,
            family.guide,
            x[:20],
            num_steps=AIS_STEPS,
            num_chains=AIS_CHAINS,
        )
        rows.append(
            within_se(
                f"{tag}: AIS over both layers (T={AIS_STEPS}, M={AIS_CHAINS}), 20 points",
                ais.log_marginal.mean().item(),
                truth.log_marginal(x[:20]).mean().item(),
                mean_stderr(ais.stderr),
            )
        )
    finally:
        family.release_params()
    return rows


def hierarchy_suite(
    truth, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """Every row above for the three inference schemes, on seeded models of their own (P = 6,
    float64, on the CPU whatever the harness's device)."""
    own = torch.Generator().manual_seed(SEED)
    rows: List[CheckRow] = []
    for inference in ("bottom_up", "ladder", "coupled"):
        ladder = inference == "ladder"  # a model where the diagonal ladder can be exact
        model = random_hierarchy(own, sizes=(2, 2) if ladder else (3, 2), ladder=ladder)
        data = model.sample(NUM_POINTS, own)  # on the CPU, as the closed form
        rows += exact_rows(model, data, inference)
        rows += estimator_rows(model, data, inference, own)
    return rows
