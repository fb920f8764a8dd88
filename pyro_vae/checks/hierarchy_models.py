"""The two-layer linear-Gaussian model of ``analytic_hierarchy.py`` written with the library's
``hierarchical`` family: fixtures for its checks (``check_hierarchy.py``) and tests.

``linear_hierarchy`` builds the family with no hidden layers (every network linear, float64)
and sets its model to exactly the closed-form one (coupled: p(x | z_1, z_2) with a zero weight
on z_2); the setters make its guide the exact posterior (bottom-up or coupled with full-rank
factors, or the ladder on a model where that is exact) or an imperfect diagonal one with
constant scales. ``guide_joint`` reads the guide's Gaussian
q(z_1, z_2 | x) back from the family's linear layers, by the closed form's own algebra.
"""

from typing import Tuple

import torch

from pyro_vae.checks.analytic_hierarchy import LinearHierarchy, chain
from pyro_vae.checks.analytic_models import (
    fixed_gaussian,
    set_full_rank_encoder,
    softplus_inverse,
)
from pyro_vae.config import from_dict
from pyro_vae.models.hierarchical import HierarchicalVAE, build
from pyro_vae.parts.guides import MIN_SCALE


def linear_hierarchy(
    truth: LinearHierarchy, inference: str, guide: str = "diagonal"
) -> HierarchicalVAE:
    """A float64 ``hierarchical`` family whose model is exactly ``truth``; its guide (linear
    ``guide`` factors, ``inference`` bottom_up or ladder) left at its initialization."""
    config = from_dict(
        {
            "model": {
                "family": "hierarchical",
                "latent_layers": list(truth.sizes),
                "hidden": [],
                "inference": inference,
            },
            "prior": {"name": "standard_normal"},
            "guide": {"name": guide},
            "likelihood": fixed_gaussian(truth.noise_scale),
        }
    )
    family = build(config, truth.data_dim).double()
    conditional, d2 = family.conditionals[0], truth.sizes[1]
    with torch.no_grad():
        conditional.loc.weight.copy_(truth.top)
        conditional.loc.bias.copy_(truth.shift)
        conditional.raw_scale.weight.zero_()
        conditional.raw_scale.bias.copy_(softplus_inverse(truth.spread - MIN_SCALE))
        weight = truth.weight
        if inference == "coupled":  # p(x | z_1, z_2): the closed form ignores z_2
            weight = torch.cat([truth.weight, weight.new_zeros(truth.data_dim, d2)], -1)
        family.decoder[0].weight.copy_(weight)
        family.decoder[0].bias.copy_(truth.bias)
        family.likelihood.raw_scale.copy_(
            softplus_inverse(truth.noise_scale.expand(truth.data_dim))
        )
    return family


def _set_diagonal(encoder, gain, offset, sd) -> None:
    """A linear diagonal guide N(gain u + offset, diag sd^2) with constant scales."""
    with torch.no_grad():
        encoder.loc.weight.copy_(gain)
        encoder.loc.bias.copy_(offset)
        encoder.raw_scale.weight.zero_()
        encoder.raw_scale.bias.copy_(softplus_inverse(sd - MIN_SCALE))


def set_exact_bottom_up(family: HierarchicalVAE, truth: LinearHierarchy) -> None:
    """Full-rank q(z_1 | x) = p(z_1 | x) and q(z_2 | z_1) = p(z_2 | z_1): the exact posterior."""
    for encoder, factor in zip(family.encoders, truth.exact_bottom_up()):
        set_full_rank_encoder(encoder, *factor)


def exact_coupled(truth: LinearHierarchy):
    """The exact coupled factors, affine with constant covariances: q(z_2 | x) = p(z_2 | x) =
    N(M_2 x + m_2, S_22) and q(z_1 | x, z_2) = p(z_1 | x, z_2) = N(G [x; z_2] + c, S_11 -
    K S_21) with K = S_12 S_22^-1 and G = [M_1 - K M_2, K], c = m_1 - K m_2 (Gaussian
    conditioning of the joint posterior); returns ((G, c, V1), (M_2, m_2, S_22))."""
    d1 = truth.sizes[0]
    probe = torch.cat([truth.bias.unsqueeze(0), truth.bias + torch.eye(truth.data_dim)])
    mu, sigma = truth.posterior(probe.to(truth.weight.dtype))
    gain = (mu[1:] - mu[:1]).T  # (D1 + D2, P)
    offset = mu[0] - gain @ truth.bias
    k = torch.linalg.solve(sigma[d1:, d1:], sigma[d1:, :d1]).T  # S_12 S_22^-1
    g1 = torch.cat([gain[:d1] - k @ gain[d1:], k], -1)
    v1 = sigma[:d1, :d1] - k @ sigma[d1:, :d1]
    return (
        (g1, offset[:d1] - k @ offset[d1:], (v1 + v1.T) / 2),
        (gain[d1:], offset[d1:], sigma[d1:, d1:]),
    )


def set_exact_coupled(family: HierarchicalVAE, truth: LinearHierarchy) -> None:
    """Full-rank q(z_2 | x) q(z_1 | x, z_2) = p(z | x): the exact posterior."""
    for encoder, factor in zip(family.encoders, exact_coupled(truth)):
        set_full_rank_encoder(encoder, *factor)


def _ladder_targets(truth: LinearHierarchy):
    """The ladder's exact (gain, offset, sd) per layer: the likelihood term of z_1, W^T (x - b)
    / diag(W^T W) with sd sigma / |W_j|, and p(z_2 | x)."""
    norms = truth.weight.pow(2).sum(0)
    g1 = truth.weight.T / norms.unsqueeze(-1)
    sd1 = truth.noise_scale / norms.sqrt()
    d1 = truth.sizes[0]
    probe = torch.cat([truth.bias.unsqueeze(0), truth.bias + torch.eye(truth.data_dim)])
    mu, sigma = truth.posterior(probe.to(truth.weight.dtype))
    g2 = (mu[1:, d1:] - mu[:1, d1:]).T
    c2 = mu[0, d1:] - g2 @ truth.bias
    return (g1, -g1 @ truth.bias, sd1), (g2, c2, sigma[d1:, d1:].diagonal().sqrt())


def set_exact_ladder(family: HierarchicalVAE, truth: LinearHierarchy) -> None:
    """The diagonal ladder guide at the exact posterior (``truth.ladder_exact()`` must hold)."""
    if not truth.ladder_exact():
        raise ValueError("the ladder is exact only when W^T W and A are diagonal")
    for encoder, target in zip(family.encoders, _ladder_targets(truth)):
        _set_diagonal(encoder, *target)


def set_perturbed_guide(
    family: HierarchicalVAE,
    truth: LinearHierarchy,
    generator: torch.Generator,
    spread: float = 0.1,
    widen: float = 1.3,
) -> None:
    """A diagonal guide near the posterior: gains and offsets with relative noise ``spread``,
    scales ``widen`` times the target's (the posterior's marginal sd), each mis-scaled by a
    factor 1 + spread N(0, 1) (constant in x, so q stays a linear Gaussian). Wider than the
    posterior, so that the importance weights have a finite variance."""

    def noisy(t: torch.Tensor) -> torch.Tensor:
        n = torch.randn(t.shape, generator=generator, dtype=t.dtype)
        return t * (1 + spread * n)

    if family.inference == "ladder":
        targets = _ladder_targets(truth)
    elif family.inference == "coupled":
        (g1, c1, v1), (g2, c2, v2) = exact_coupled(truth)
        targets = ((g1, c1, v1.diagonal().sqrt()), (g2, c2, v2.diagonal().sqrt()))
    else:
        (g1, c1, v1), (g2, c2, v2) = truth.exact_bottom_up()
        targets = ((g1, c1, v1.diagonal().sqrt()), (g2, c2, v2.diagonal().sqrt()))
    for encoder, (gain, offset, sd) in zip(family.encoders, targets):
        _set_diagonal(encoder, noisy(gain), noisy(offset), widen * noisy(sd).abs())


def guide_joint(
    family: HierarchicalVAE, truth: LinearHierarchy, x: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The diagonal guide's q(z_1, z_2 | x) as a Gaussian over the stacked (z_1, z_2): mean (N,
    D) and covariance (N, D, D). Bottom-up: the chain of its two factors. Coupled: q(z_2 | x)
    then q(z_1 | x, z_2), linear in z_2 with the gain of its input's z_2 columns. Ladder: q(z_2 | x)
    then q(z_1 | z_2, x) with precision l^ + p and mean (mu^ l^ + (A z_2 + a) p) / (l^ + p),
    l^ = s^_1^-2 and p = s^-2 the model's (so linear in z_2 with gain diag(p / (l^ + p)) A).
    """
    with torch.no_grad():
        first, second = family.encoders
        if family.inference == "coupled":
            top = second(x).base_dist
            inputs = torch.cat([x, x.new_zeros(x.shape[0], truth.sizes[1])], -1)
            q1 = first(inputs).base_dist  # the mean at z_2 = 0; the z_2 gain below
            gain = first.loc.weight[:, truth.data_dim :]
            return _reorder(
                truth,
                *chain(
                    top.loc,
                    torch.diag_embed(top.scale.pow(2)),
                    gain,
                    q1.loc,
                    torch.diag_embed(q1.scale.pow(2)),
                ),
            )
        q1 = first(x).base_dist
        if family.inference == "bottom_up":
            lin = second.loc
            sd2 = second(q1.loc).base_dist.scale[0]
            mean, cov = chain(
                q1.loc,
                torch.diag_embed(q1.scale.pow(2)),
                lin.weight,
                lin.bias,
                torch.diag(sd2.pow(2)),
            )
            return mean, cov.expand(x.shape[0], *cov.shape[-2:])
        top = second(x).base_dist  # the ladder's d_1 = x (no hidden layers)
        lam, prec = q1.scale.pow(-2), truth.spread.pow(-2)
        total = lam + prec
        gain = (prec / total).unsqueeze(-1) * truth.top  # (N, D1, D2)
        offset = (q1.loc * lam + truth.shift * prec) / total
        mean, cov = chain(
            top.loc,
            torch.diag_embed(top.scale.pow(2)),
            gain,
            offset,
            torch.diag_embed(1 / total),
        )
        return _reorder(truth, mean, cov)


def _reorder(truth: LinearHierarchy, mean: torch.Tensor, cov: torch.Tensor):
    """A Gaussian over (z_2, z_1) as one over (z_1, z_2)."""
    d2 = truth.sizes[1]
    order = torch.cat([torch.arange(d2, mean.shape[-1]), torch.arange(d2)])
    return mean[..., order], cov[..., order, :][..., order]
