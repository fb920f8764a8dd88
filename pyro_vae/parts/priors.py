"""Priors p(z).

Every prior is an ``nn.Module`` whose ``forward()`` gives a distribution with batch shape ``()``
and event shape ``(latent_dim,)``; the model's data plate broadcasts it. A prior never knows
which guide it is paired with: the VampPrior receives the guide's ``encode`` functions (x -> a
distribution over z) and nothing else. Mixtures of diagonal Gaussians (``mixture``, and
``vamp`` with a diagonal guide) use :class:`~pyro_vae.distributions.DiagonalNormalMixture`,
whose log-density is a few matrix products.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.config import flow_widths
from pyro_vae.errors import ConfigError
from pyro_vae.parts.distributions import (
    DiagonalNormalMixture,
    ExpandedMixture,
    UnitNormal,
)
from pyro_vae.parts.networks import Architecture, zero_last_layer
from pyro_vae.registry import PRIORS

Encode = Callable[[torch.Tensor], dist.Distribution]


@dataclass(frozen=True)
class PriorContext:
    """What a prior may use: the sizes, the guide's full posterior ``encode(x)`` = q(z | x)
    (flows included), and ``encode_gaussian(x)``, its Gaussian part before any flow (the same
    function when the guide has no flows)."""

    arch: Architecture
    encode: Encode
    encode_gaussian: Optional[Encode] = None


def mixture_of(
    logits: torch.Tensor, components: dist.Distribution
) -> dist.Distribution:
    """The mixture sum_k softmax(logits)_k components_k of a batch (K,) of distributions:
    :class:`DiagonalNormalMixture` (matrix products) when they are diagonal Gaussians,
    :class:`ExpandedMixture` (each z against each component) otherwise."""
    base = getattr(components, "base_dist", None)
    if (
        isinstance(components, dist.Independent)
        and isinstance(base, torch.distributions.Normal)
        and components.reinterpreted_batch_ndims == 1
        and base.loc.dim() == 2
    ):
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        return DiagonalNormalMixture(logits, loc, scale)
    return ExpandedMixture(dist.Categorical(logits=logits), components)


class StandardNormal(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))  # in every checkpoint

    def forward(self) -> dist.Distribution:
        # loc gives the latent's shape, dtype and device
        return UnitNormal(self.loc).to_event(1)


class LearnedNormal(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), 0.5413))  # softplus = 1

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)


class Mixture(nn.Module):
    def __init__(self, latent_dim: int, num_components: int, spread: float):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(spread * torch.randn(num_components, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((num_components, latent_dim), 0.5413))

    def forward(self) -> dist.Distribution:
        return DiagonalNormalMixture(
            self.logits, self.locs, F.softplus(self.raw_scales)
        )


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k) at K learned pseudo-inputs u_k (Tomczak & Welling 2018).

    ``components`` says which q: ``"gaussian"`` (the default) is the guide's Gaussian before
    its flows; ``"posterior"`` (the paper's definition) is the guide's full q(z | u_k), flows
    included. For guides without flows the two are the same density. A flow guide's density
    at an arbitrary z needs each flow's inverse, sequential over the latent dimensions for
    IAF and run on every (code, pseudo-input) pair: at the digits defaults (latent 10, 500
    pseudo-inputs, batch 100) ``"posterior"`` makes an IAF guide's step about 100 times the
    ``"gaussian"`` one and needs gigabytes, hence the default (issue #25); the exact prior is
    ``prior.components = "posterior"``. Flows without an inverse (planar) are refused there.

    Pseudo-inputs live in [0, 1] (a sigmoid of free parameters). The prior runs the guide's
    encoder on them, once per call of the model (shared by all its particles), so the model
    registers the encoder too (``uses_encoder``)."""

    uses_encoder = True

    def __init__(
        self,
        context: PriorContext,
        num_pseudo: int,
        init_mean: float,
        init_std: float,
        components: str = "gaussian",
    ):
        super().__init__()
        self.components = components
        if components == "gaussian":
            self.encode = context.encode_gaussian or context.encode
        else:
            self.encode = context.encode
        pixels = init_mean + init_std * torch.randn(num_pseudo, context.arch.data_dim)
        self.raw_pseudo = nn.Parameter(torch.logit(pixels.clamp(1e-3, 1 - 1e-3)))
        self.register_buffer("weights", torch.zeros(num_pseudo))
        if components == "posterior":
            self._check_density_anywhere()

    def _check_density_anywhere(self) -> None:
        """Refuse a posterior whose density at an arbitrary z is not computable."""
        with torch.no_grad():
            q = self.encode(self.pseudo_inputs[:1])
            try:
                q.log_prob(self.raw_pseudo.new_zeros(q.batch_shape + q.event_shape))
            except (NotImplementedError, KeyError):  # Pyro's planar flow: KeyError
                flows = [type(t).__name__ for t in getattr(q, "transforms", [])]
                raise ConfigError(
                    "prior 'vamp' with components = \"posterior\" needs the guide's "
                    f"density at any z, but its flows ({', '.join(flows) or type(q).__name__})"
                    ' have no inverse: set prior.components = "gaussian" (mix the '
                    "guide's Gaussian before its flows) or use an invertible flow guide"
                ) from None

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_pseudo)

    def forward(self) -> dist.Distribution:
        """The mixture. Without gradients (evaluation) it is kept and reused while no tensor it
        depends on has changed (``_inputs_key``), so that evaluating many chunks encodes
        the pseudo-inputs once, not once per chunk (10 ms of CPU per call at 500 pseudo-
        inputs on the MNIST net). Never while tracing: a traced graph must compute it.
        """
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            return mixture_of(self.weights, self.encode(self.pseudo_inputs))
        key = self._inputs_key()
        kept = self.__dict__.get("_kept")
        if kept is None or kept[0] != key:
            kept = (key, mixture_of(self.weights, self.encode(self.pseudo_inputs)))
            self.__dict__["_kept"] = kept
        return kept[1]

    def _inputs_key(self) -> Tuple:
        """What the mixture is a function of: the encoding function, every parameter and
        buffer of its module and of this prior (identity, storage and version counter, which
        every in-place change bumps, an optimizer's step and ``load_state_dict`` included),
        train/eval modes and autocast. (A write through ``.data`` bypasses the version
        counter, as it bypasses autograd's checks.)"""
        owner = getattr(self.encode, "__self__", None)
        modules = [self] + ([owner] if isinstance(owner, nn.Module) else [])
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        device = self.raw_pseudo.device.type
        return (
            id(owner),
            getattr(self.encode, "__func__", self.encode),
            tuple((id(t), t.data_ptr(), t._version) for t in tensors),
            tuple(m.training for module in modules for m in module.modules()),
            torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device),
        )


class FlowPrior(nn.Module):
    """N(0, I) pushed through masked autoregressive flows: density evaluation is one parallel
    pass per flow (sampling is sequential). Identity at initialization."""

    def __init__(self, latent_dim: int, num_flows: int, flow_hidden: Sequence[int]):
        super().__init__()
        self.base = StandardNormal(latent_dim)
        self.flows = nn.ModuleList(
            zero_last_layer(
                T.affine_autoregressive(latent_dim, hidden_dims=list(flow_hidden))
            )
            for _ in range(num_flows)
        )
        for flow in self.flows:  # Pyro's inverse (sampling) starts from float32 zeros
            flow.arn.layers[0].register_forward_pre_hook(_in_weight_dtype)

    def forward(self) -> dist.Distribution:
        return dist.TransformedDistribution(
            self.base(), [flow.inv for flow in self.flows]
        )


def _in_weight_dtype(layer: nn.Module, args: tuple) -> tuple:
    """A forward pre-hook: the layer's input in its weight's dtype (sampling the flow prior in
    float64 otherwise feeds Pyro's float32 starting zeros to float64 weights)."""
    return (args[0].to(layer.weight.dtype),) + args[1:]


def _positive(name: str, option: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"prior '{name}' option {option} must be > 0, got {value}")


@PRIORS.register("standard_normal")
def standard_normal(context: PriorContext) -> nn.Module:
    """N(0, I)."""
    return StandardNormal(context.arch.latent_dim)


@PRIORS.register("learned_normal")
def learned_normal(context: PriorContext) -> nn.Module:
    """N(m, diag s^2) with learned m and s (starting at N(0, I))."""
    return LearnedNormal(context.arch.latent_dim)


@PRIORS.register("mixture")
def mixture(
    context: PriorContext, num_components: int = 10, spread: float = 1.0
) -> nn.Module:
    """A learnable mixture of ``num_components`` diagonal Gaussians, means drawn N(0, spread^2)."""
    _positive("mixture", "num_components", num_components)
    _positive("mixture", "spread", spread)
    return Mixture(context.arch.latent_dim, num_components, spread)


@PRIORS.register("vamp")
def vamp(
    context: PriorContext,
    num_pseudo: int = 500,
    init_mean: float = 0.05,
    init_std: float = 0.01,
    components: str = "gaussian",
) -> nn.Module:
    """VampPrior with ``num_pseudo`` learnable pseudo-inputs (Tomczak & Welling 2018), whose
    pixels start near ``init_mean`` (nearly black images, as in the paper). Pseudo-inputs that
    start as noise around 0.5, or as training images, let the posterior collapse (KL -> 0)
    within a few epochs on digits and MNIST. ``components``: ``"gaussian"`` (default) mixes the
    guide's Gaussian before its flows, ``"posterior"`` the guide's full q(z | u_k) (the
    paper's prior, flows included; for flow guides many times slower, see ``VampPrior``);
    the two are the same for guides without flows."""
    _positive("vamp", "num_pseudo", num_pseudo)
    if components not in ("posterior", "gaussian"):
        raise ConfigError(
            f'prior \'vamp\' option components must be "posterior" or "gaussian", '
            f"got {components!r}"
        )
    if not (0 < init_mean < 1 and init_std >= 0):
        raise ConfigError(
            f"prior 'vamp' needs 0 < init_mean < 1 and init_std >= 0, got {init_mean}, {init_std}"
        )
    return VampPrior(context, num_pseudo, init_mean, init_std, components)


@PRIORS.register("flow")
def flow(
    context: PriorContext,
    num_flows: int = 2,
    flow_hidden: Optional[Sequence[int]] = None,
) -> nn.Module:
    """A learnable normalizing flow (masked autoregressive) on N(0, I).

    Unset ``flow_hidden`` is ``[max(128, 2 * latent_dim)]``."""
    _positive("flow", "num_flows", num_flows)
    latent = context.arch.latent_dim
    hidden = flow_widths("prior 'flow'", flow_hidden, latent, autoregressive=True)
    return FlowPrior(latent, num_flows, hidden)
