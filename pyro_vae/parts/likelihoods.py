"""Observation models p(x | z): heads that turn the decoder's output into a distribution.

The decoder maps z to one number per pixel, ``out``; a likelihood maps ``out`` to a
``pyro.distributions`` object with event shape ``(data_dim,)``.
"""

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.config import BINARY, EIGHT_BIT
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.parts.continuous_bernoulli import ContinuousBernoulliLogits
from pyro_vae.parts.discretized import LEVELS, DiscretizedLogisticMixture
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import LIKELIHOODS


class Likelihood(nn.Module):
    """Base class: ``forward(out)`` gives p(x | z); ``check_data`` refuses data it cannot score."""

    name = "likelihood"
    unit_interval = False  # data must lie in [0, 1]
    binary = False  # data must be exactly 0 or 1

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        if not torch.isfinite(x).all():
            raise DataError(
                f"{what} holds NaN or infinite values; clean or drop those rows"
            )
        if self.binary and not ((x == 0) | (x == 1)).all():
            bad = x[(x != 0) & (x != 1)][0].item()
            raise DataError(
                f"{what} is not binary (found the value {bad:g}) but the '{self.name}' likelihood "
                f"needs 0/1 pixels: binarize the data (data.binarize = auto or true) or use the "
                f"'continuous_bernoulli' or 'gaussian' likelihood"
            )
        if self.unit_interval and ((x < 0) | (x > 1)).any():
            raise DataError(
                f"{what} has values outside [0, 1] (from {x.min().item():g} to "
                f"{x.max().item():g}) but the '{self.name}' likelihood needs pixels in [0, 1]: "
                f"rescale the data or use the 'gaussian' likelihood"
            )

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | z], for reconstructions and sample grids."""
        return self(out).mean


class BernoulliPixels(dist.Independent):
    """``Bernoulli(logits=l).to_event(1)`` with a leaner ``log_prob``.

    Built as ``BernoulliPixels(dist.Bernoulli(logits=l), 1)``; everything but ``log_prob`` is
    Pyro's ``Independent``. The log-density of binary pixels x is
    ``sum_d x_d l_d - softplus(l_d)``, computed one of two ways:

    - with gradients (training): torch's BCE-with-logits kernel, summed over the pixels and then
      negated (torch's Bernoulli negates every pixel first; the numbers are identical). The
      kernel's fused backward pass matters here: the two-pass form below was 10% to 2.5x slower
      forward plus backward at batch 100.
    - without gradients (evaluation): ``x . l - sum_d softplus(l_d)``, a dot product (a
      matrix-vector product when one image is scored against many draws, as importance sampling
      does) plus one full-size pass, where the BCE kernel makes three full-size temporaries. With
      K = 5000 draws of 784 pixels that is 8.4-9.3 ms per image instead of 10.0-12.5. The two
      ways agree to rounding (float64: 1e-12 relative in the tests).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.base_dist.logits
        if not torch.is_grad_enabled():
            return _dot(logits, value) - F.softplus(
                logits, threshold=SOFTPLUS_LINEAR
            ).sum(-1)
        logits, value = torch.broadcast_tensors(logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -(bce.sum(-1))


# softplus(l) = l beyond this logit; the rest, log1p(exp(-l)) < 4e-18, is below float64's rounding
SOFTPLUS_LINEAR = 40.0


def _dot(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sum_d logits_d value_d over the last dimension, broadcast over the others."""
    if value.dim() <= logits.dim() and value.shape[:-1].numel() == 1:
        return logits @ value.reshape(-1)  # one image, many draws: matrix times vector
    return (logits * value).sum(-1)


class Bernoulli(Likelihood):
    name, unit_interval, binary = "bernoulli", True, True

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return BernoulliPixels(dist.Bernoulli(logits=out), 1)


class ContinuousBernoulli(Likelihood):
    """Loaiza-Ganem & Cunningham (2019): the normalized density on [0, 1] for grey pixels,
    log p(x | l) = x l - softplus(l) + log(l / tanh(l/2)), exact at any logit
    (:class:`~pyro_vae.parts.continuous_bernoulli.ContinuousBernoulliLogits`; torch's clamps its
    probabilities, which breaks the normaliser past |l| ~ 16 in float32)."""

    name, unit_interval = "continuous_bernoulli", True

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return ContinuousBernoulliLogits(logits=out).to_event(1)


class Gaussian(Likelihood):
    """N(out, sigma^2) per pixel; sigma fixed, or learned per pixel when ``learn_scale``."""

    name = "gaussian"

    def __init__(self, data_dim: int, scale: float, learn_scale: bool):
        super().__init__()
        raw = torch.full(
            (data_dim,), math.log(math.expm1(scale))
        )  # softplus(raw) = scale
        if learn_scale:
            self.raw_scale = nn.Parameter(raw)
        else:
            self.register_buffer("raw_scale", raw)

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.scale).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


@LIKELIHOODS.register("bernoulli")
def bernoulli(arch: Architecture) -> Likelihood:
    """Bernoulli pixels with logits ``out``: binary data only."""
    return Bernoulli()


bernoulli.needs = BINARY  # data.binarize = "auto" binarizes for it (config/checks.py)


@LIKELIHOODS.register("continuous_bernoulli")
def continuous_bernoulli(arch: Architecture) -> Likelihood:
    """Continuous Bernoulli pixels with logits ``out``: data in [0, 1]."""
    return ContinuousBernoulli()


@LIKELIHOODS.register("gaussian")
def gaussian(
    arch: Architecture, scale: float = 0.1, learn_scale: bool = False
) -> Likelihood:
    """Gaussian pixels with mean ``out`` and standard deviation ``scale`` (learned per pixel,
    starting at ``scale``, when ``learn_scale``)."""
    if not scale > 0:
        raise ConfigError(
            f"likelihood 'gaussian' option scale must be > 0, got {scale}"
        )
    return Gaussian(arch.data_dim, scale, learn_scale)


# an untrained decoder (outputs near 0) starts at the middle grey with scale e^-2 = 0.14:
# at scale 1 most of the mass falls in the two tail bins and learning starts from > 8 bits/dim
LOC_OFFSET, LOG_SCALE_OFFSET = 0.5, -2.0


class DiscretizedLogistic(Likelihood):
    """8-bit pixels k/255 from a discretized mixture of ``num_components`` logistics per pixel.
    The decoder gives ``params_per_dim`` numbers per pixel: location - 1/2 and log-scale + 2
    (plus a mixture logit per component when there are several), the log-scale floored at
    ``min_log_scale`` as in Salimans et al. (2017)."""

    name, unit_interval, discrete = "discretized_logistic", True, True

    def __init__(self, data_dim: int, num_components: int, min_log_scale: float):
        super().__init__()
        self.data_dim, self.num_components = data_dim, num_components
        self.min_log_scale = min_log_scale
        self.params_per_dim = 2 if num_components == 1 else 3 * num_components

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        super().check_data(x, what)
        off = (x * LEVELS - torch.round(x * LEVELS)).abs() > 1e-3
        if off.any():
            bad = x[off][0].item()
            raise DataError(
                f"{what} is not on the 8-bit grid k/255 (found {bad:.6g} = "
                f"{bad * LEVELS:.4g}/255) but the '{self.name}' likelihood scores 8-bit "
                f"pixels: store images as uint8 / 255, or use the 'gaussian' or "
                f"'continuous_bernoulli' likelihood"
            )

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        k = self.num_components
        params = out.reshape(*out.shape[:-1], self.params_per_dim, self.data_dim)
        params = params.movedim(-2, -1)  # (..., D, params_per_dim)
        if k == 1:
            loc, log_scale = params[..., :1], params[..., 1:]
            logits = torch.zeros_like(loc)
        else:
            logits, loc, log_scale = params.split(k, dim=-1)
        loc, log_scale = loc + LOC_OFFSET, log_scale + LOG_SCALE_OFFSET
        log_scale = log_scale.clamp(min=self.min_log_scale)
        return DiscretizedLogisticMixture(logits, loc, log_scale).to_event(1)


@LIKELIHOODS.register("discretized_logistic")
def discretized_logistic(
    arch: Architecture, num_components: int = 1, min_log_scale: float = -7.0
) -> Likelihood:
    """Discretized logistic (mixture) for 8-bit pixels k/255 (Salimans et al. 2017); report
    bits/dim."""
    if num_components < 1:
        raise ConfigError(
            f"likelihood 'discretized_logistic' option num_components must be >= 1, "
            f"got {num_components}"
        )
    return DiscretizedLogistic(arch.data_dim, num_components, min_log_scale)


discretized_logistic.needs = (
    EIGHT_BIT  # binarized data is refused for it at config time
)
