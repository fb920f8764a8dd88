"""A conditional linear-Gaussian model in closed form: the ground truth of the conditional
VAE's checks (Sohn et al. 2015's CVAE with linear networks).

Model, for a condition c in R^Q (a one-hot label or given pixels), z in R^D, target t in R^P::

    p(z | c)    = N(A c, I_D)
    p(t | z, c) = N(W z + B c, sigma^2 I_P)

Writing z = A c + u with u ~ N(0, I), it is the linear-Gaussian model of ``analytic.py`` with
the bias (W A + B) c, so everything is exact:

* log p(t | c) = log N(t; M c, C), M = W A + B, C = W W^T + sigma^2 I
* p(z | t, c) = N(A c + G (t - M c), Sigma), Sigma = (I + W^T W / sigma^2)^{-1},
  G = Sigma W^T / sigma^2: an affine map of [t, c] with weights G on t and A - G M on c
* for q(z | t, c) = N(m, diag s^2), the conditional ELBO::

    ELBO = log N(t; W m + B c, sigma^2 I) - sum_j s_j^2 ||W_{:,j}||^2 / (2 sigma^2)
           - 1/2 sum_j (s_j^2 + (m_j - (A c)_j)^2 - 1 - log s_j^2)

Torch only: it must not depend on the library it checks.
"""

from typing import Tuple

import torch
from torch.distributions import MultivariateNormal, Normal


class LinearGaussianConditional:
    """``prior_weight`` A (D, Q), ``weight`` W (P, D), ``condition_weight`` B (P, Q),
    ``noise_scale`` sigma; rows of c are (N, Q), rows of t (N, P)."""

    def __init__(self, prior_weight, weight, condition_weight, noise_scale: float):
        self.prior_weight, self.weight = prior_weight, weight
        self.condition_weight = condition_weight
        self.noise_scale = torch.as_tensor(noise_scale, dtype=weight.dtype)

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    def mean_map(self) -> torch.Tensor:
        """M = W A + B: E[t | c] = M c."""
        return self.weight @ self.prior_weight + self.condition_weight

    def log_marginal(self, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """log p(t | c) per row, shape (N,)."""
        eye = torch.eye(self.weight.shape[0], dtype=t.dtype)
        cov = self.weight @ self.weight.T + self.noise_scale**2 * eye
        return MultivariateNormal(c @ self.mean_map().T, cov).log_prob(t)

    def posterior_map(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights on t (D, P), weights on c (D, Q), Sigma (D, D)) of p(z | t, c)."""
        variance = self.noise_scale**2
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype)
        precision = eye + self.weight.T @ self.weight / variance
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        gain = covariance @ self.weight.T / variance
        return gain, self.prior_weight - gain @ self.mean_map(), covariance

    def elbo(self, t, c, loc, scale) -> torch.Tensor:
        """The conditional ELBO per row for q(z | t, c) = N(``loc``, diag ``scale``^2)."""
        w = self.weight
        fit = Normal(loc @ w.T + c @ self.condition_weight.T, self.noise_scale)
        spread = scale.pow(2) @ w.pow(2).sum(0) / (2 * self.noise_scale**2)
        gap = loc - c @ self.prior_weight.T
        kl = 0.5 * (scale.pow(2) + gap.pow(2) - 1 - scale.pow(2).log()).sum(-1)
        return fit.log_prob(t).sum(-1) - spread - kl

    def sample(self, c: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Targets t ~ p(t | c) for the rows of c."""
        z = c @ self.prior_weight.T + torch.randn(
            len(c), self.latent_dim, generator=generator, dtype=c.dtype
        )
        noise = torch.randn(
            len(c), self.weight.shape[0], generator=generator, dtype=c.dtype
        )
        return (
            z @ self.weight.T + c @ self.condition_weight.T + self.noise_scale * noise
        )


def random_conditional(
    generator: torch.Generator, condition_dim: int, target_dim: int, latent_dim: int = 2
) -> LinearGaussianConditional:
    """A random model (float64) in which c moves both p(z | c) and p(t | z, c) by about as
    much as z does."""

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return LinearGaussianConditional(
        draw(latent_dim, condition_dim),
        draw(target_dim, latent_dim),
        draw(target_dim, condition_dim),
        0.7,
    )
