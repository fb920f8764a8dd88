"""Check suite: the density of every registered guide and prior, away from initialization.

Each part is built through its registry (``vae.build``, float64, small MLP), and every parameter
is then moved by ``SPREAD`` times a standard normal draw, so that flows are far from the identity
they start at (where log|det J| = 0 and a wrong log-determinant cannot show). Two checks:

* **flows, by an independent Jacobian**: for z = f(eps) (the guide's flows, or the flow prior's
  inverse flows), log q(z) = log base(eps) - log|det J_f(eps)|, with J_f from
  ``torch.autograd.functional.jacobian`` of the flow's forward map (never its own
  ``log_abs_det_jacobian``); the library's ``log_prob`` must agree to ``DENSITY_TOL``.
  The mixture and the VampPrior are held to their definitions (a log-sum-exp over components;
  p(z) = (1/K) sum_k q(z | u_k), Tomczak & Welling 2018).
* **normalization**: int q(z) dz = 1 by importance sampling from a Gaussian twice as wide as a
  moment-matched fit to the part's own draws, within 4 SE. Planar flows have no inverse, so their
  density exists only at their own draws: the Jacobian check covers them alone.
"""

import math
from typing import Callable, List

import torch
from torch.distributions import MultivariateNormal, TransformedDistribution

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.stats import CheckRow, within_se
from pyro_vae.config import from_dict
from pyro_vae.models.vae import VAE, build
from pyro_vae.registry import GUIDES, PRIORS

DATA_DIM, LATENT_DIM, HIDDEN = 6, 2, 8
SPREAD = 0.2
DENSITY_TOL = 1e-8
AWAY = 0.05  # the flow's mean |log det J| must exceed this: away from the identity
NORMALIZATION_DRAWS = 10_000
NO_INVERSE = ("planar",)
NUM_PSEUDO = 20


def perturbed_vae(guide: str, prior: str, generator: torch.Generator) -> VAE:
    """A float64 VAE with ``guide`` and ``prior`` from the registries, every parameter moved
    (the VampPrior with ``NUM_PSEUDO`` pseudo-inputs)."""
    options = {"num_pseudo": NUM_PSEUDO} if prior == "vamp" else {}
    config = from_dict(
        {
            "model": {"latent_dim": LATENT_DIM, "hidden": [HIDDEN]},
            "guide": {"name": guide},
            "prior": {"name": prior, **options},
        }
    )
    vae = build(config, DATA_DIM).double()
    with torch.no_grad():
        for p in vae.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.add_(SPREAD * noise.to(p.device))
    return vae


def _jacobian_logdet(fn: Callable, eps: torch.Tensor) -> torch.Tensor:
    """log|det d fn / d eps| per row of ``eps`` (N, D), from autograd's full Jacobian."""
    jac = torch.autograd.functional.jacobian(fn, eps)  # (N, D, N, D)
    rows = torch.arange(eps.shape[0], device=eps.device)
    return torch.linalg.slogdet(jac[rows, :, rows, :]).logabsdet


def _flow_row(label: str, library: torch.Tensor, independent, logdet) -> CheckRow:
    diff = (library - independent).abs().max().item()
    away = logdet.abs().mean().item()
    return CheckRow(
        f"{label}: max |log density - (log base - log|det J|)|, autograd J",
        diff,
        0.0,
        0.0,
        diff < DENSITY_TOL and away > AWAY,
        f"< {DENSITY_TOL:g}, mean |log det J| = {away:.2f} > {AWAY:g}",
    )


def guide_flow_row(name: str, vae: VAE, x: torch.Tensor) -> CheckRow:
    q = vae.encoder(x)
    eps = q.base_dist.sample()
    z = eps
    for t in q.transforms:
        z = t(z)
    library = q.log_prob(z)  # the transforms' caches hold this draw (planar needs them)

    def forward(e: torch.Tensor) -> torch.Tensor:
        for t in q.transforms:
            e = t(e)
        return e

    logdet = _jacobian_logdet(forward, eps)
    return _flow_row(
        f"guide {name}", library, q.base_dist.log_prob(eps) - logdet, logdet
    )


def prior_flow_row(vae: VAE, z: torch.Tensor) -> CheckRow:
    """The flow prior maps u ~ N(0, I) through the flows' inverses: u = flows(z), run forward."""
    p = vae.prior()
    flows = list(
        vae.prior.flows
    )  # p = TransformedDistribution(base, [f.inv for f in flows])

    def to_base(v: torch.Tensor) -> torch.Tensor:
        for flow in reversed(flows):
            v = flow(v)
        return v

    logdet = _jacobian_logdet(to_base, z)
    independent = p.base_dist.log_prob(to_base(z)) + logdet
    return _flow_row("prior flow", p.log_prob(z), independent, logdet)


def definition_row(name: str, vae: VAE, z: torch.Tensor) -> CheckRow:
    """The mixture and the VampPrior against their definitions."""
    if name == "mixture":
        m = vae.prior
        components = torch.distributions.Normal(
            m.locs, torch.nn.functional.softplus(m.raw_scales)
        )
        log_mix = torch.log_softmax(m.logits, 0)
        terms = log_mix + components.log_prob(z[:, None, :]).sum(-1)
    else:
        u = vae.prior.pseudo_inputs
        terms = vae.encoder(u).log_prob(z[:, None, :]) - math.log(u.shape[0])
    independent = torch.logsumexp(terms, -1)
    diff = (vae.prior().log_prob(z) - independent).abs().max().item()
    return CheckRow(
        f"prior {name}: max |log p(z) - definition|",
        diff,
        0.0,
        0.0,
        diff < DENSITY_TOL,
        f"< {DENSITY_TOL:g}",
    )


def normalization_row(label: str, density, generator: torch.Generator) -> CheckRow:
    """int q(z) dz = 1 for the distribution ``density`` (batch shape () or (1,))."""
    draws = density.sample((2000,)).reshape(2000, -1)
    mean, cov = draws.mean(0), torch.cov(draws.T)
    proposal = MultivariateNormal(mean, covariance_matrix=4 * cov)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        z = proposal.sample((NORMALIZATION_DRAWS,))
    shape = (NORMALIZATION_DRAWS,) + tuple(density.batch_shape) + (z.shape[-1],)
    log_q = density.log_prob(z.reshape(shape)).reshape(-1)
    w = torch.exp(log_q - proposal.log_prob(z))
    return within_se(
        f"{label}: integral of the density (IS, {NORMALIZATION_DRAWS} draws)",
        w.mean().item(),
        1.0,
        w.std().item() / math.sqrt(NORMALIZATION_DRAWS),
    )


def density_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """Every registered guide (with the standard normal prior) and prior (with the diagonal
    guide): flows by autograd Jacobian, mixtures by definition, and normalization; on ``x``'s
    device (``truth`` is not used: these parts have no linear-Gaussian closed form)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(
        torch.float64
    )  # Pyro's sequential flow inverse makes default-dtype
    try:  # zeros, which must match the float64 parts
        return _density_checks(generator, x.device)
    finally:
        torch.set_default_dtype(default)


def _density_checks(generator: torch.Generator, device: torch.device) -> List[CheckRow]:
    rows: List[CheckRow] = []
    x = torch.rand(5, DATA_DIM, generator=generator, dtype=torch.float64).to(device)
    with torch.no_grad():
        for name in GUIDES.names():
            vae = perturbed_vae(name, "standard_normal", generator).to(device)
            if isinstance(vae.encoder(x), TransformedDistribution):
                with torch.enable_grad():
                    rows.append(guide_flow_row(name, vae, x))
            if name not in NO_INVERSE:
                q = vae.encoder(x[:1])
                rows.append(normalization_row(f"guide {name}", q, generator))
        for name in PRIORS.names():
            vae = perturbed_vae("diagonal", name, generator).to(device)
            z = 1.5 * torch.randn(5, LATENT_DIM, generator=generator, dtype=x.dtype)
            z = z.to(device)
            if name == "flow":
                with torch.enable_grad():
                    rows.append(prior_flow_row(vae, z))
            elif name in ("mixture", "vamp"):
                rows.append(definition_row(name, vae, z))
            rows.append(normalization_row(f"prior {name}", vae.prior(), generator))
    return rows
