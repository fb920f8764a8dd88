"""Densities the library computes itself, because torch's versions are wrong or slow for it.

- :class:`DiagonalNormalMixture`: a mixture of diagonal Gaussians whose log-density is a few
  matrix products instead of element-wise work on (N, K, D) tensors.
- :class:`ReparameterizedNormal` and :class:`UnitNormal`: torch's Normal with fewer operations
  per training step where the density has a shorter exact form (at the distribution's own
  reparameterized draw; with location 0 and scale 1). At batch 10 a training step is a few
  hundred operations on small tensors, so their count, not their size, sets its time.

The continuous Bernoulli has a module of its own (``continuous_bernoulli.py``), and so has the
discretized logistic mixture (``discretized.py``).
"""

import math
from typing import Optional

import pyro.distributions as dist
import torch
from torch.distributions import constraints

LOG_2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)
HALF_LOG_2PI = 0.5 * LOG_2PI
ACCUMULATE = (
    torch.float64
)  # the mixture's quadratic form is summed in at least this dtype


class ReparameterizedNormal(dist.Normal):
    """``pyro.distributions.Normal`` whose log density at its own reparameterized draw
    z = loc + scale * eps (the last ``rsample``) is computed from eps,

        log N(z; loc, scale) = -eps^2 / 2 - log scale - log(2 pi) / 2,

    the same function of (loc, scale, eps) as the general formula, so the same value and the
    same gradients, in five operations instead of nine, three of which take part in the
    backward pass instead of nine (eps carries no gradient): what the guide's site costs
    ``Trace_ELBO``, log q(z | x) at the z it drew. Any other value, or a draw from
    ``sample``, takes torch's general formula. The numbers drawn are eager ``Normal.rsample``'s
    (``randn``, traced or not). At its own draw the result is a function of loc and scale
    alone: differentiate it with respect to them (as an ELBO does), not with respect to z (the
    DReG estimator in objectives.py evaluates q at a detached copy of z, so the general formula).
    """

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        z = self.loc + eps * self.scale
        self._draw = (z, eps)
        return z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        draw = self.__dict__.get("_draw")
        if draw is None or value is not draw[0]:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return -0.5 * draw[1].pow(2) - self.scale.log() - HALF_LOG_2PI


class UnitNormal(dist.Normal):
    """N(0, 1) in every coordinate, shaped, typed and placed like ``like``: log density
    -z^2 / 2 - log(2 pi) / 2 (3 operations instead of torch's 9; the N(0, I) prior's site).
    Location and scale are real tensors (zeros and ones), so sampling, KL divergences and
    everything else are torch's Normal's."""

    def __init__(self, like: torch.Tensor, validate_args=None):
        super().__init__(
            torch.zeros_like(like), torch.ones_like(like), validate_args=validate_args
        )

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(UnitNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -0.5 * value.pow(2) - HALF_LOG_2PI


class DiagonalNormalMixture(dist.TorchDistribution):
    """p(z) = sum_k w_k N(z; mu_k, diag sigma_k^2), event shape (D,), batch shape ().

    ``logits`` (K,) give w = softmax(logits); ``locs`` and ``scales`` are (K, D). The log-density
    of N points against K components is an (N, K) table from three matrix products,

        log N(z; mu_k, sigma_k) = -1/2 [ (z^2) . (1/sigma_k^2) - 2 z . (mu_k/sigma_k^2)
                                         + sum_d mu_kd^2/sigma_kd^2 ] - sum_d log sigma_kd
                                  - (D/2) log 2 pi,

    then a logsumexp over k with log w: no (N, K, D) tensor, the cost that made
    ``MixtureSameFamily(Independent(Normal))`` the bulk of a VampPrior's time. The expansion
    subtracts terms of size |z|^2/sigma^2 and |mu|^2/sigma^2, and rounding in them is
    absolute: so z and mu are cast to float64 (``ACCUMULATE``) whatever the input dtype, centred
    there on the components' mean location, and the quadratic form is summed in float64, then
    cast back (in float32 it would lose about 1e-7 |z/sigma|^2 nats: 0.01 nats at
    |z/sigma| ~ 300).
    """

    arg_constraints = {
        "logits": constraints.real_vector,
        "locs": constraints.real,
        "scales": constraints.positive,
    }
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        scales: torch.Tensor,
        validate_args=None,
    ):
        if (
            locs.dim() != 2
            or scales.shape != locs.shape
            or logits.shape != locs.shape[:1]
        ):
            raise ValueError(
                "DiagonalNormalMixture needs logits (K,), locs and scales (K, D); got "
                f"{tuple(logits.shape)}, {tuple(locs.shape)}, {tuple(scales.shape)}"
            )
        self.logits, self.locs, self.scales = logits, locs, scales
        super().__init__(torch.Size(), locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == torch.Size():
            return self
        return super().expand(batch_shape, _instance)

    @property
    def mixture_weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, -1)

    @property
    def mean(self) -> torch.Tensor:
        return self.mixture_weights @ self.locs

    def component_log_prob(
        self, value: torch.Tensor, offset: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """log N(z; mu_k, sigma_k) (+ ``offset``_k) for every z in ``value`` (..., D): shape
        (..., K). One matrix product [z^2, z, 1] . [-P/2, mu P, c]^T with P = 1/sigma^2 and
        c = -1/2 sum_d mu^2 P - sum_d log sigma - (D/2) log 2 pi (+ offset), in float64.
        """
        dtype = value.dtype
        wide = torch.promote_types(dtype, ACCUMULATE)
        center = self.locs.detach().to(wide).mean(0)
        z = value.to(wide).reshape(-1, value.shape[-1]) - center
        locs = self.locs.to(wide) - center
        scales = self.scales.to(wide)
        precision = scales.pow(-2)
        const = -0.5 * (locs * locs * precision).sum(-1) - scales.log().sum(-1)
        const = const - 0.5 * locs.shape[-1] * LOG_2PI
        if offset is not None:
            const = const + offset.to(wide)
        features = torch.cat([z * z, z, torch.ones_like(z[:, :1])], -1)
        coefficients = torch.cat(
            [-0.5 * precision, locs * precision, const[:, None]], -1
        )
        out = (features @ coefficients.T).to(dtype)
        return out.reshape(value.shape[:-1] + out.shape[-1:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_w = torch.log_softmax(self.logits, -1)
        return torch.logsumexp(self.component_log_prob(value, log_w), -1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            k = torch.distributions.Categorical(logits=self.logits).sample(shape)
            eps = torch.randn(
                shape + self.event_shape, dtype=self.locs.dtype, device=self.locs.device
            )
            return self.locs[k] + self.scales[k] * eps


class ExpandedMixture(dist.MixtureSameFamily):
    """``MixtureSameFamily`` whose ``log_prob`` expands z to every component explicitly,
    z (..., D) -> (..., K, D), instead of relying on broadcasting: a conditional flow's
    network (Pyro's ``ConditionalAutoRegressiveNN``) expands its context (K, F) to z's batch
    shape and cannot broadcast against (..., 1, D)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        components = self.component_distribution
        k = components.batch_shape[-1]
        event = components.event_shape
        batch = value.shape[: value.dim() - len(event)]
        z = value.unsqueeze(-1 - len(event)).expand(batch + (k,) + event)
        log_w = torch.log_softmax(self.mixture_distribution.logits, -1)
        return torch.logsumexp(components.log_prob(z) + log_w, -1)
