"""The continuous Bernoulli on logits (Loaiza-Ganem & Cunningham 2019), exact at any logit.

torch's ``ContinuousBernoulli`` clamps its probabilities, so at |l| > ~16 in float32 its
density no longer integrates to one and its normaliser has no gradient. Here the log
normaliser, mean, variance, CDF and inverse CDF are written in forms that stay exact at any
logit (Taylor series near l = 0, where the closed forms cancel).
"""

import math

import pyro.distributions as dist
import torch

LOG_2 = math.log(2.0)

SERIES_BELOW = 0.1  # |l| below which the Taylor series replace the closed forms


def _small(logits: torch.Tensor):
    """(|l| < SERIES_BELOW, |l| with the small ones replaced by 1 so the closed forms stay finite
    in both branches of ``torch.where`` and their gradients)."""
    a = logits.abs()
    small = a < SERIES_BELOW
    return small, torch.where(small, torch.ones_like(a), a)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) = log(l / tanh(l / 2)), the continuous Bernoulli's log normaliser (even in l).

    For a = |l| >= 0.1: log a - log(1 - e^-a) + log(1 + e^-a) (``log1p``/``expm1``, exact to
    rounding at any a: log C(l) ~ log a for large a); below, the Taylor series
    log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - 127 l^8/4838400 (truncation < 1e-19).
    """
    small, a = _small(logits)
    closed = a.log() - torch.log(-torch.expm1(-a)) + torch.log1p(torch.exp(-a))
    s = logits * logits
    series = LOG_2 + s * (
        1 / 12 + s * (-7 / 1440 + s * (31 / 90720 + s * (-127 / 4838400)))
    )
    return torch.where(small, series, closed)


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = 1 / (1 - e^-l) - 1 / l; series 1/2 + l/12 - l^3/720 + l^5/30240 - l^7/1209600
    for |l| < 0.1."""
    small, _ = _small(logits)
    safe = torch.where(small, torch.ones_like(logits), logits)
    closed = -1 / torch.expm1(-safe) - 1 / safe
    s = logits * logits
    series = 0.5 + logits * (1 / 12 + s * (-1 / 720 + s * (1 / 30240 - s / 1209600)))
    return torch.where(small, series, closed)


def cb_variance(logits: torch.Tensor) -> torch.Tensor:
    """Var[x] = d E[x] / dl = 1 / l^2 - e^-a / (1 - e^-a)^2 (a = |l|); series 1/12 - l^2/240
    + l^4/6048 - l^6/172800 + l^8/5322240 for |l| < 0.1. Just above 0.1 the closed form
    subtracts two numbers near 100 (float32: about 1e-4 relative)."""
    small, a = _small(logits)
    closed = a.pow(-2) - torch.exp(-a) / torch.expm1(-a).pow(2)
    s = logits * logits
    series = 1 / 12 + s * (-1 / 240 + s * (1 / 6048 + s * (-1 / 172800 + s / 5322240)))
    return torch.where(small, series, closed)


def cb_icdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The inverse CDF, x = log(1 + u (e^l - 1)) / l, written for a < 0 as
    G(a, v) = log1p(v expm1(a)) / a (no overflow, no cancellation) and for l > 0 through the
    symmetry x(l, u) = 1 - x(-l, 1 - u); series u + l u(1-u)/2 + l^2 u(1-u)(1-2u)/6 for
    |l| < 1e-4 (error < 1e-12)."""
    tiny = logits.abs() < 1e-4
    a = torch.where(tiny, -torch.ones_like(logits), -logits.abs())
    positive = logits > 0
    v = torch.where(positive, 1 - u, u)
    g = torch.log1p(v * torch.expm1(a)) / a
    closed = torch.where(positive, 1 - g, g)
    w = u * (1 - u)
    series = u + logits * w / 2 + logits * logits * w * (1 - 2 * u) / 6
    return torch.where(tiny, series, closed).clamp(0, 1)


def cb_cdf(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """P(X <= x) = (e^{l x} - 1) / (e^l - 1) = expm1(l x) / expm1(l) for l < 0, by the symmetry
    F_l(x) = 1 - F_{-l}(1 - x) for l > 0, and x at l = 0."""
    zero = logits == 0
    a = torch.where(zero, -torch.ones_like(logits), -logits.abs())
    positive = logits > 0
    y = torch.where(positive, 1 - x, x)
    f = torch.expm1(a * y) / torch.expm1(a)
    return torch.where(zero, x, torch.where(positive, 1 - f, f))


class ContinuousBernoulliLogits(dist.ContinuousBernoulli):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on logits l, exact at any l:

        log p(x | l) = x l - softplus(l) + log C(l),   C(l) = l / tanh(l / 2),   x in [0, 1],

    i.e. p(x | l) = l e^{l x} / (e^l - 1). Construct with ``ContinuousBernoulliLogits(logits=l)``.
    ``log_prob``, ``mean``, ``variance``, ``entropy``, ``cdf``, ``icdf`` and the
    (reparameterized) ``rsample`` use the stable forms above; torch's parent class clamps
    sigmoid(l) to [eps, 1 - eps], so its normaliser stops growing at |l| ~ 16 (float32) and its
    density no longer integrates to one there.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        return (
            value * logits - torch.nn.functional.softplus(logits) + cb_log_norm(logits)
        )

    @property
    def mean(self) -> torch.Tensor:
        return cb_mean(self.logits)

    @property
    def variance(self) -> torch.Tensor:
        return cb_variance(self.logits)

    def entropy(self) -> torch.Tensor:
        logits = self.logits
        return -(
            cb_mean(logits) * logits
            - torch.nn.functional.softplus(logits)
            + cb_log_norm(logits)
        )

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return cb_cdf(self.logits, value)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        return cb_icdf(self.logits, value)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        return cb_icdf(self.logits.expand(shape), u)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
