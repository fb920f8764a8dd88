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

from pyro_vae.config import flow_widths
from pyro_vae.errors import ConfigError
from pyro_vae.parts.distributions import ReparameterizedNormal
from pyro_vae.parts.networks import Architecture, zero_last_layer
from pyro_vae.registry import GUIDES

MIN_SCALE = 1e-5


class DiagonalGuide(nn.Module):
    """Mean-field Gaussian N(mu(x), diag sigma(x)^2) (Kingma & Welling 2014)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.trunk = arch.encoder_trunk()
        self.loc = nn.Linear(arch.feature_dim, arch.latent_dim)
        self.raw_scale = nn.Linear(arch.feature_dim, arch.latent_dim)

    def gaussian_from_features(self, h: torch.Tensor) -> dist.Distribution:
        return ReparameterizedNormal(
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
        rows, cols = torch.tril_indices(d, d, offset=-1)
        self.register_buffer("rows", rows, persistent=False)  # off_diag's order
        self.register_buffer("cols", cols, persistent=False)
        # flat positions in a d x d matrix: the strict lower triangle, then the diagonal
        flat = torch.cat([rows * d + cols, torch.arange(d) * (d + 1)])
        self.register_buffer("flat_positions", flat, persistent=False)

    def scale_tril(self, h: torch.Tensor) -> torch.Tensor:
        """L(x): the off-diagonal outputs and the softplus diagonal copied into a zero matrix
        in one ``index_copy`` (a third of the time of a diagonal matrix plus an indexed
        assignment, forward and backward, at batch 100 and d = 50)."""
        d = self.loc.out_features
        values = torch.cat(
            [self.off_diag(h), F.softplus(self.raw_diag(h)) + MIN_SCALE], -1
        )
        tril = values.new_zeros(values.shape[:-1] + (d * d,))
        tril = tril.index_copy(-1, self.flat_positions, values)
        return tril.view(values.shape[:-1] + (d, d))

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
            base, [condition(flow, h) for flow in self.flows]
        )


class ContextFirstNN:
    """A Pyro ``ConditionalAutoRegressiveNN`` conditioned on ``context``, with the context's
    share of the first (masked linear) layer, W_c h + b, computed once instead of on every
    call; the inputs' share W_x z is added to it by broadcasting. The same function of z as
    ``partial(net, context=context)`` (tested), without concatenating the context to every
    input. That matters where one context meets many inputs: a VampPrior's q(z | u_k) at N
    codes inverts the flow one dimension at a time on (N, K, D) inputs, and Pyro's network
    would concatenate the (N, K, F) expanded context on each of those D passes."""

    def __init__(self, net: nn.Module, context: torch.Tensor):
        self.net = net
        first = net.layers[0]
        weight = first.mask * first.weight
        split = context.shape[-1]
        self.input_weight = weight[:, split:]
        self.context_part = F.linear(context, weight[:, :split], first.bias)
        self.permutation = net.permutation
        self.get_permutation = net.get_permutation

    def __call__(self, x: torch.Tensor):
        net = self.net
        # Pyro's inverse starts from float32 zeros whatever the flow's dtype: take the
        # weights' dtype (Pyro's own network concatenates, which promotes the same way)
        h = (
            F.linear(x.to(self.input_weight.dtype), self.input_weight)
            + self.context_part
        )
        for layer in net.layers[1:]:
            h = layer(net.f(h))
        if net.output_multiplier == 1:
            return h
        h = h.reshape(h.shape[:-1] + (net.output_multiplier, net.input_dim))
        if net.count_params == 1:
            return h
        if net.all_ones:
            return torch.unbind(h, dim=-2)
        return tuple(h[..., s, :] for s in net.param_slices)


def condition(flow: nn.Module, h: torch.Tensor):
    """``flow.condition(h)``; for conditional affine autoregressive flows (IAF) without skip
    connections, the same transform with :class:`ContextFirstNN` as its network."""
    if isinstance(flow, T.ConditionalAffineAutoregressive) and (
        getattr(flow.nn, "skip_layer", None) is None
    ):
        return T.AffineAutoregressive(ContextFirstNN(flow.nn, h), **flow.kwargs)
    return flow.condition(h)


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
