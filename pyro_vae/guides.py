"""Amortized variational families q(z | x).

Every guide is an ``nn.Module`` with ``forward(x)``, the distribution q(z | x) (batch shape
``x.shape[:-1]``, event shape ``(latent_dim,)``), and ``gaussian(x)``, its Gaussian part before
any flow (what the VampPrior evaluates at its pseudo-inputs). The flows come from
``pyro.distributions.transforms``.
"""

from typing import List, Optional, Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import nn

from .config import flow_widths
from .errors import ConfigError
from .networks import Architecture
from .registry import GUIDES

MIN_SCALE = 1e-5


class DiagonalGuide(nn.Module):
    """Mean-field Gaussian N(mu(x), diag sigma(x)^2) (Kingma & Welling 2014)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.trunk = arch.encoder_trunk()
        self.loc = nn.Linear(arch.feature_dim, arch.latent_dim)
        self.raw_scale = nn.Linear(arch.feature_dim, arch.latent_dim)

    def gaussian_from_features(self, h: torch.Tensor) -> dist.Distribution:
        return dist.Normal(
            self.loc(h), F.softplus(self.raw_scale(h)) + MIN_SCALE
        ).to_event(1)

    def gaussian(self, x: torch.Tensor) -> dist.Distribution:
        return self.gaussian_from_features(self.trunk(x))

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return self.gaussian(x)


class FullRankGuide(nn.Module):
    """Full-covariance Gaussian N(mu(x), L(x) L(x)^T) with an amortized Cholesky factor L(x):
    softplus diagonal, free strictly-lower triangle."""

    def __init__(self, arch: Architecture):
        super().__init__()
        d = arch.latent_dim
        self.trunk = arch.encoder_trunk()
        self.loc = nn.Linear(arch.feature_dim, d)
        self.raw_diag = nn.Linear(arch.feature_dim, d)
        self.off_diag = nn.Linear(arch.feature_dim, d * (d - 1) // 2)
        self.register_buffer(
            "rows", torch.tril_indices(d, d, offset=-1)[0], persistent=False
        )
        self.register_buffer(
            "cols", torch.tril_indices(d, d, offset=-1)[1], persistent=False
        )

    def scale_tril(self, h: torch.Tensor) -> torch.Tensor:
        tril = torch.diag_embed(F.softplus(self.raw_diag(h)) + MIN_SCALE)
        tril[..., self.rows, self.cols] = self.off_diag(h)
        return tril

    def gaussian(self, x: torch.Tensor) -> dist.Distribution:
        h = self.trunk(x)
        return dist.MultivariateNormal(self.loc(h), scale_tril=self.scale_tril(h))

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return self.gaussian(x)


class FlowGuide(DiagonalGuide):
    """A diagonal Gaussian pushed through flows conditioned on the encoder's features."""

    def __init__(self, arch: Architecture, flows: Sequence[nn.Module]):
        super().__init__(arch)
        self.flows = nn.ModuleList(flows)

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        h = self.trunk(x)
        base = self.gaussian_from_features(h)
        return dist.TransformedDistribution(
            base, [flow.condition(h) for flow in self.flows]
        )


def zero_last_layer(flow: nn.Module) -> nn.Module:
    """Make an affine autoregressive flow (plain: ``.arn``, conditional: ``.nn``) start as the
    identity: its network's output layer gives shift 0 and log-scale 0."""
    last = (flow.arn if hasattr(flow, "arn") else flow.nn).layers[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return flow


def _check_flows(
    name: str, num_flows: int, hidden: Optional[Sequence[int]], arch: Architecture
) -> List[int]:
    """Check the flow options; returns the hidden widths (unset: from the latent size)."""
    if num_flows < 1:
        raise ConfigError(
            f"guide '{name}' option num_flows must be >= 1, got {num_flows}"
        )
    return flow_widths(f"guide '{name}'", hidden, arch.latent_dim, name == "iaf")


@GUIDES.register("diagonal")
def diagonal(arch: Architecture) -> nn.Module:
    """Mean-field (diagonal) Gaussian."""
    return DiagonalGuide(arch)


@GUIDES.register("full_rank")
def full_rank(arch: Architecture) -> nn.Module:
    """Full-rank Gaussian (MultivariateNormal with amortized Cholesky factor)."""
    return FullRankGuide(arch)


@GUIDES.register("iaf")
def iaf(
    arch: Architecture, num_flows: int = 2, flow_hidden: Optional[Sequence[int]] = None
) -> nn.Module:
    """Inverse autoregressive flow (Kingma et al. 2016): ``num_flows`` conditional affine
    autoregressive layers on the diagonal guide, identity at initialization. Unset
    ``flow_hidden`` is ``[max(128, 2 * latent_dim)]``."""
    flow_hidden = _check_flows("iaf", num_flows, flow_hidden, arch)
    flows = [
        zero_last_layer(
            T.conditional_affine_autoregressive(
                arch.latent_dim,
                arch.feature_dim,
                hidden_dims=[int(h) for h in flow_hidden],
            )
        )
        for _ in range(num_flows)
    ]
    return FlowGuide(arch, flows)


@GUIDES.register("planar")
def planar(
    arch: Architecture, num_flows: int = 4, flow_hidden: Optional[Sequence[int]] = None
) -> nn.Module:
    """Amortized planar flows (Rezende & Mohamed 2015) on the diagonal guide; each flow's
    parameters are a function of the encoder's features. Unset ``flow_hidden`` is
    ``[max(128, 2 * latent_dim)]``."""
    flow_hidden = _check_flows("planar", num_flows, flow_hidden, arch)
    flows = [
        T.conditional_planar(
            arch.latent_dim, arch.feature_dim, hidden_dims=[int(h) for h in flow_hidden]
        )
        for _ in range(num_flows)
    ]
    return FlowGuide(arch, flows)
