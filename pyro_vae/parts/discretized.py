"""The discretized logistic mixture: a distribution over the 256 pixel values k/255.

Kingma et al. (2016), "Improved variational inference with inverse autoregressive flow"
(appendix: discretized logistic); Salimans et al. (2017), "PixelCNN++" (the mixture, and the
tails at the edge values). Used by the ``discretized_logistic`` likelihood (likelihoods.py).
"""

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F

LEVELS = 255  # pixel k in {0, ..., 255} is stored as k / 255


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for small and large d (Maechler 2012)."""
    return torch.where(
        d < math.log(2.0), torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d))
    )


def _log_bin(
    k: torch.Tensor, a: torch.Tensor, b: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """log P(bin k) of one logistic from its standardized upper and lower edges a and b
    (``width`` = a - b): the tails at k = 0 and k = 255, the difference of CDFs between.
    """
    middle = F.logsigmoid(a) + F.logsigmoid(-b) + _log1mexp(width)
    lowest = torch.where(k == 0, F.logsigmoid(a), middle)
    return torch.where(k == LEVELS, F.logsigmoid(-b), lowest)


class DiscretizedLogisticMixture(dist.TorchDistribution):
    """Per-pixel mixture of logistics discretized to the 256 values k/255 (Kingma et al. 2016;
    Salimans et al. 2017, PixelCNN++), batch shape = the parameters' shape minus the last
    (component) dimension, one pixel per batch element.

    With bin edges e_k^± = x ± 1/510 and a = (e^+ - mu)/s, b = (e^- - mu)/s, one component gives
    P(0) = sigmoid(a), P(255) = 1 - sigmoid(b) = sigmoid(-b) (the tails), and in between
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)), whose log is a sum of
    log-sigmoids and ``log1mexp((a - b))``: every case stays in log space. The mixture is a
    logsumexp over components weighted by softmax(logits).
    """

    arg_constraints = {}
    support = dist.constraints.unit_interval
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        log_scale: torch.Tensor,
        validate_args=None,
    ):
        self.logits, self.loc, self.log_scale = torch.broadcast_tensors(
            logits, loc, log_scale
        )
        super().__init__(self.loc.shape[:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.loc.shape[-1:]
        return DiscretizedLogisticMixture(
            self.logits.expand(shape),
            self.loc.expand(shape),
            self.log_scale.expand(shape),
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = torch.round(value * LEVELS).unsqueeze(-1)
        inv_s = torch.exp(-self.log_scale)
        centered = k / LEVELS - self.loc
        a = inv_s * (centered + 0.5 / LEVELS)
        b = inv_s * (centered - 0.5 / LEVELS)
        per_component = _log_bin(k, a, b, inv_s / LEVELS)
        return torch.logsumexp(per_component + F.log_softmax(self.logits, -1), -1)

    def cdf_at_edges(self, k: int) -> torch.Tensor:
        """P(x <= k/255) for k in 0..254 (the upper edge (k + 1/2)/255 of bin k)."""
        a = torch.exp(-self.log_scale) * ((k + 0.5) / LEVELS - self.loc)
        return (torch.softmax(self.logits, -1) * torch.sigmoid(a)).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = sum_k (k/255) P(k) = 1 - (1/255) sum_{k<255} P(x <= k/255) (summation by
        parts), one bin edge at a time so memory stays at the parameters' size."""
        total = torch.zeros_like(self.loc[..., 0])
        for k in range(LEVELS):
            total = total + self.cdf_at_edges(k)
        return 1 - total / LEVELS

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        component = dist.Categorical(logits=self.logits).sample(sample_shape)
        pick = component.unsqueeze(-1)
        loc = self.loc.expand(shape + self.loc.shape[-1:]).gather(-1, pick)
        log_s = self.log_scale.expand(shape + self.loc.shape[-1:]).gather(-1, pick)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        x = loc.squeeze(-1) + torch.exp(log_s.squeeze(-1)) * (u.log() - (-u).log1p())
        return torch.round(x.clamp(0, 1) * LEVELS) / LEVELS
