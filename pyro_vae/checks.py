"""``pyro-vae check``: every ELBO estimator of the library against the closed forms of ``analytic.py``.

The linear-Gaussian model p(z) = N(0, I), p(x | z) = N(W z + b, sigma^2 I) is built from the
library's own parts (``analytic.linear_vae``: ``vae.build`` with no hidden layers, float64), with its
encoder set either to the exact posterior (``full_rank`` guide) or to an imperfect mean-field guide
(``diagonal``), and run through ``pyro.infer``'s ELBOs, ``marginal`` and ``train.fit``.

Monte Carlo estimates pass when |estimate - exact| < 4 standard errors, the standard error being the
estimator's own (from independent repeats or per-draw variances); identities that hold draw by draw
pass at a float64 tolerance.
"""

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np
import pyro
import pyro.infer
import torch
from pyro import poutine

from .analytic import (
    LinearGaussian,
    diagonal_guide_params,
    gaussian_kl_to_standard_normal,
    linear_vae,
    ppca_maximum_likelihood,
    set_exact_posterior_guide,
    set_perturbed_diagonal_guide,
    true_model,
)
from .config import from_dict
from .data import Dataset
from .marginal import log_marginal_likelihood, log_prob_per_datapoint, vectorized_traces
from .train import fit, resolve_device
from .vae import LATENT, OBSERVED, build

SEED = 0
NUM_SE = 4.0  # a Monte Carlo estimate passes within this many standard errors of the exact value
EXACT_TOL = 1e-6  # per data point, for identities that hold for every draw
IWAE_KS = (1, 10, 100, 1000)
ELBOS = (
    ("Trace_ELBO", pyro.infer.Trace_ELBO),
    ("TraceMeanField_ELBO", pyro.infer.TraceMeanField_ELBO),
)


@dataclass
class CheckRow:
    """One line of the check table: a Monte Carlo (or exact) ``estimate`` of a ``quantity``, its
    ``exact`` value, the estimate's standard error (0 for deterministic quantities), whether the
    check ``passed``, and the ``criterion`` it was held to."""

    quantity: str
    estimate: float
    exact: float
    stderr: float
    passed: bool
    criterion: str = ""


def within_se(
    quantity: str, estimate: float, exact: float, stderr: float, k: float = NUM_SE
) -> CheckRow:
    passed = abs(estimate - exact) < k * stderr
    return CheckRow(quantity, estimate, exact, stderr, passed, f"|diff| < {k:g} SE")


def within_tol(
    quantity: str, estimate: float, exact: float, tol: float = EXACT_TOL
) -> CheckRow:
    return CheckRow(
        quantity, estimate, exact, 0.0, abs(estimate - exact) < tol, f"|diff| < {tol:g}"
    )


# -- the checks ---------------------------------------------------------------------------------


def _repeat(
    fn: Callable[[], torch.Tensor], times: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of ``times`` independent draws of the estimator ``fn``."""
    draws = torch.stack([fn() for _ in range(times)])
    return draws.mean(0), draws.std(0) / math.sqrt(times)


def _elbo_loss(cls: type, num_particles: int) -> pyro.infer.ELBO:
    return cls(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
    )


def exact_posterior_checks(truth: LinearGaussian, x: torch.Tensor) -> List[CheckRow]:
    """With q = p(z | x), log w = log p(x, z) - log q(z | x) = log p(x) for every draw."""
    vae = linear_vae(truth, "full_rank")
    set_exact_posterior_guide(vae, truth)
    n, exact = x.shape[0], truth.log_marginal(x)
    try:
        model_trace, guide_trace = vectorized_traces(
            vae.model, vae.guide, 100, (x,), {}
        )
        log_w = log_prob_per_datapoint(model_trace) - log_prob_per_datapoint(
            guide_trace
        )
        worst = (log_w - exact).abs().max().item()
        rows = [
            CheckRow(
                "exact guide: max |log w - log p(x)|, 100 draws/point",
                worst,
                0.0,
                0.0,
                worst < EXACT_TOL,
                f"< {EXACT_TOL:g}",
            )
        ]
        for name, cls in ELBOS:
            loss = _elbo_loss(cls, 1).loss(vae.model, vae.guide, x)
            rows.append(
                within_tol(
                    f"exact guide: 1-sample {name} / N", -loss / n, exact.mean().item()
                )
            )
    finally:
        vae.release_params()
    return rows


def estimator_checks(
    truth: LinearGaussian,
    x: torch.Tensor,
    generator: torch.Generator,
    particles: int = 100,
    repeats: int = 20,
) -> List[CheckRow]:
    """Trace_ELBO and TraceMeanField_ELBO against the closed-form ELBO of an imperfect diagonal
    guide, TraceMeanField's analytic KL, and log p(x) = ELBO + KL(q || p(z | x))."""
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator)
    n = x.shape[0]
    try:
        with torch.no_grad():
            loc, scale = diagonal_guide_params(vae, x)
        elbo, kl_post = truth.elbo(x, loc, scale), truth.kl_to_posterior(x, loc, scale)
        log_p = truth.log_marginal(x)
        rows = []
        for name, cls in ELBOS:
            loss = _elbo_loss(cls, particles)
            mean, se = _repeat(
                lambda: torch.tensor(-loss.loss(vae.model, vae.guide, x) / n), repeats
            )
            rows.append(
                within_se(
                    f"{name} / N ({particles} particles x {repeats})",
                    mean.item(),
                    elbo.mean().item(),
                    se.item(),
                )
            )
        prior_only = poutine.block(vae.model, hide=[OBSERVED])
        kl_loss = _elbo_loss(pyro.infer.TraceMeanField_ELBO, 1).loss(
            prior_only, vae.guide, x
        )
        kl_exact = gaussian_kl_to_standard_normal(loc, scale).mean().item()
        rows.append(
            within_tol("TraceMeanField KL(q || p(z)) / N", kl_loss / n, kl_exact, 1e-9)
        )
        rows.append(
            within_tol(
                "max |ELBO + KL(q || p(z|x)) - log p(x)|",
                (elbo + kl_post - log_p).abs().max().item(),
                0.0,
                1e-9,
            )
        )
        # draw by draw, log w + log q(z|x) - log p(z|x) = log p(x), so log p(x) - (MC ELBO) is the MC
        # KL(q || p(z|x)), which must match the closed form
        with torch.no_grad():
            model_trace, guide_trace = vectorized_traces(
                vae.model, vae.guide, particles, (x,), {}
            )
        z, log_q = (
            guide_trace.nodes[LATENT]["value"],
            guide_trace.nodes[LATENT]["log_prob"],
        )
        log_ratio = log_q - truth.posterior_distribution(x).log_prob(z)
        log_w = log_prob_per_datapoint(model_trace) - log_prob_per_datapoint(
            guide_trace
        )
        rows.append(
            within_tol(
                "max |log w + log q/p(z|x) - log p(x)| per draw",
                (log_w + log_ratio - log_p).abs().max().item(),
                0.0,
                EXACT_TOL,
            )
        )
        se = (log_ratio.var(0) / particles).sum().sqrt().item() / n
        rows.append(
            within_se(
                f"MC KL(q || p(z|x)) / N ({particles} draws)",
                log_ratio.mean().item(),
                kl_post.mean().item(),
                se,
            )
        )
    finally:
        vae.release_params()
    return rows


def gradient_checks(
    truth: LinearGaussian,
    x: torch.Tensor,
    generator: torch.Generator,
    particles: int = 20,
    repeats: int = 40,
) -> List[CheckRow]:
    """Trace_ELBO's reparameterized gradient with respect to the diagonal guide's parameters
    against the closed-form gradient (``elbo_grad`` chained through the linear encoder). One row per
    parameter tensor, showing its worst element (largest |diff| / SE)."""
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator)
    names = ["loc.weight", "loc.bias", "raw_scale.weight", "raw_scale.bias"]
    params = [vae.encoder.get_parameter(name) for name in names]
    loss = _elbo_loss(pyro.infer.Trace_ELBO, particles)
    try:

        def estimate() -> torch.Tensor:
            grads = torch.autograd.grad(
                loss.differentiable_loss(vae.model, vae.guide, x), params
            )
            return torch.cat([g.reshape(-1) for g in grads])

        mean, se = _repeat(estimate, repeats)
        loc, scale = diagonal_guide_params(vae, x)
        grad_loc, grad_log_scale = truth.elbo_grad(x, loc.detach(), scale.detach())
        exact = torch.autograd.grad(
            (loc, scale.log()), params, grad_outputs=(-grad_loc, -grad_log_scale)
        )
        exact = torch.cat([g.reshape(-1) for g in exact])
    finally:
        vae.release_params()
    rows, start = [], 0
    for name, param in zip(names, params):
        part = slice(start, start + param.numel())
        start += param.numel()
        z = ((mean[part] - exact[part]) / se[part]).abs()
        i = part.start + int(z.argmax())
        rows.append(
            within_se(
                f"d(-ELBO)/d {name}, worst of {param.numel()}",
                mean[i].item(),
                exact[i].item(),
                se[i].item(),
            )
        )
    return rows


def iwae_checks(
    truth: LinearGaussian,
    x: torch.Tensor,
    generator: torch.Generator,
    ks: Sequence[int] = IWAE_KS,
    spread: float = 0.3,
    widen: float = 2.0,
    budget: int = 2_000_000,
) -> List[CheckRow]:
    """ELBO <= IWAE_K <= log p(x) and IWAE_K rising with K (Burda et al. 2016), in expectation: each
    data point's IWAE_K is the average of ``budget / (N K)`` independent runs of
    ``marginal.log_marginal_likelihood`` with K samples, and the means over the data points are
    compared with the exact per-point values (paired, so the SE is the Monte Carlo error alone).
    """
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator, spread, widen)
    n = x.shape[0]
    try:
        with torch.no_grad():
            elbo = truth.elbo(x, *diagonal_guide_params(vae, x))
        log_p = truth.log_marginal(x)
        bounds = []
        for k in ks:
            runs = max(1, budget // (n * k))
            estimate = log_marginal_likelihood(
                vae.model, vae.guide, x.repeat(runs, 1), num_samples=k
            )
            bounds.append(estimate.log_marginal.reshape(runs, n).mean(0))
    finally:
        vae.release_params()

    def se(d: torch.Tensor) -> float:
        return (d.std() / math.sqrt(n)).item()

    rows = [
        within_se(
            "IWAE_1 / N = ELBO",
            bounds[0].mean().item(),
            elbo.mean().item(),
            se(bounds[0] - elbo),
        )
    ]
    for k, bound in zip(ks[1:], bounds[1:]):
        above, below = bound - elbo, log_p - bound
        passed = above.mean() > NUM_SE * se(above) and below.mean() > -NUM_SE * se(
            below
        )
        rows.append(
            CheckRow(
                f"IWAE_{k} / N in (ELBO, log p(x)]",
                bound.mean().item(),
                log_p.mean().item(),
                se(below),
                bool(passed),
                f"> ELBO + {NUM_SE:g} SE, < log p + {NUM_SE:g} SE",
            )
        )
    for (k0, b0), (k1, b1) in zip(zip(ks, bounds), zip(ks[1:], bounds[1:])):
        rise = b1 - b0
        rows.append(
            CheckRow(
                f"IWAE_{k1} - IWAE_{k0} / N > 0",
                rise.mean().item(),
                0.0,
                se(rise),
                bool(rise.mean() > NUM_SE * se(rise)),
                f"> {NUM_SE:g} SE",
            )
        )
    return rows


def fit_linear_vae(
    x: torch.Tensor,
    held_out: torch.Tensor,
    latent_dim: int,
    noise_scale: float,
    epochs: int = 40,
) -> LinearGaussian:
    """Train a linear VAE (full-rank guide, sigma fixed at ``noise_scale``, Trace_ELBO, Adam at
    lr 0.05, batches of 100) on ``x`` with ``train.fit``, on ``x``'s device; the learned model.
    """
    config = from_dict(
        {
            "model": {"latent_dim": latent_dim, "hidden": []},
            "guide": {"name": "full_rank"},
            "likelihood": {
                "name": "gaussian",
                "scale": float(noise_scale),
                "learn_scale": False,
            },
            "objective": {"name": "trace"},
            "train": {
                "epochs": epochs,
                "batch_size": 100,
                "lr": 0.05,
                "device": str(x.device),
                "seed": SEED,
            },
        }
    )
    vae = build(config, x.shape[1]).double()
    try:
        fit(vae, Dataset("linear-gaussian", x, held_out, (1, x.shape[1])), config)
    finally:
        vae.release_params()
    decoder = vae.decoder[0]
    return LinearGaussian(
        decoder.weight.detach(), decoder.bias.detach(), vae.likelihood.scale[0].detach()
    )


def training_check(
    truth: LinearGaussian,
    generator: torch.Generator,
    num_data: int = 1000,
    epochs: int = 40,
    tolerance: float = 0.05,
) -> CheckRow:
    """``fit_linear_vae`` on ``num_data`` draws from ``truth`` (sigma fixed at the truth's): the trained
    model's exact mean log p(x) must come within ``tolerance`` nats per point of the maximum-likelihood
    pPCA model's with the same sigma (Tipping & Bishop 1999), and not above it."""
    device = truth.weight.device
    x = truth.sample(num_data, generator).to(device)
    held_out = truth.sample(num_data // 5, generator).to(device)
    best = ppca_maximum_likelihood(
        x, truth.latent_dim, truth.noise_scale
    ).mean_log_likelihood
    learned = fit_linear_vae(
        x, held_out, truth.latent_dim, truth.noise_scale.item(), epochs
    )
    estimate = learned.log_marginal(x).mean().item()
    passed = best - tolerance < estimate <= best + 1e-9
    return CheckRow(
        f"SVI-trained linear VAE: mean log p(x), {epochs} epochs",
        estimate,
        best,
        0.0,
        passed,
        f"within {tolerance:g} below pPCA ML",
    )


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch, Python and NumPy (``fit`` reseeds all three), restoring their states on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            pyro.set_rng_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def run_checks(device: str = "cpu") -> List[CheckRow]:
    """Every check above on one random linear-Gaussian model (P = 6, D = 2, sigma = 0.5) and 500 data
    points from it, on ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``), seeded, with Pyro's
    validation on; the global RNG states are restored afterwards. The checks are thousands of
    small tensor operations, which run fastest on one CPU thread."""
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_checks(dev)
    finally:
        torch.set_num_threads(threads)


def _run_checks(dev: torch.device) -> List[CheckRow]:
    with _seeded(dev, SEED), pyro.validation_enabled(True):
        generator = torch.Generator().manual_seed(SEED)
        truth = true_model(generator)
        x = truth.sample(500, generator).to(dev)
        truth = truth.to(dev)
        return (
            exact_posterior_checks(truth, x)
            + estimator_checks(truth, x, generator)
            + gradient_checks(truth, x, generator)
            + iwae_checks(truth, x, generator)
            + [training_check(truth, generator)]
            + __import__("pyro_vae.ais_checks", fromlist=["_"]).ais_checks(dev)
        )


def format_table(rows: Sequence[CheckRow]) -> str:
    """The rows as a fixed-width text table."""
    header = ("quantity", "estimate", "exact", "stderr", "criterion", "result")
    lines = [
        (
            r.quantity,
            f"{r.estimate:.6g}",
            f"{r.exact:.6g}",
            f"{r.stderr:.2g}",
            r.criterion,
            "ok" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
        for line in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
