"""The linear-Gaussian latent model in closed form: the ground truth every estimator is checked against.

Model (probabilistic PCA; Tipping & Bishop 1999), with z in R^D and x in R^P::

    p(z)     = N(0, I_D)
    p(x | z) = N(W z + b, sigma^2 I_P)          W: (P, D)

Everything below is exact:

* marginal     p(x) = N(b, C),  C = W W^T + sigma^2 I_P
* posterior    p(z | x) = N(mu(x), Sigma),  Sigma = (I_D + W^T W / sigma^2)^{-1},
               mu(x) = Sigma W^T (x - b) / sigma^2   (the covariance does not depend on x)
* for a diagonal Gaussian q(z | x) = N(m, diag s^2), the ELBO (Kingma & Welling 2014)::

    ELBO = E_q[log p(x | z)] - KL(q || p(z))
    E_q[log p(x | z)] = log N(x; W m + b, sigma^2 I) - sum_j s_j^2 ||W_{:,j}||^2 / (2 sigma^2)
    KL(q || N(0, I))  = -1/2 sum_j (1 + log s_j^2 - m_j^2 - s_j^2)

  and log p(x) = ELBO + KL(q || p(z | x)) for every q.

Densities come from ``torch.distributions``; shapes follow the data: ``x`` is (N, P), ``loc`` and
``scale`` are (N, D), and per-data-point results are (N,). Use float64 for checks.

This module imports torch alone: it is the ground truth, and must not depend on the library it
checks. The same model written with the library's parts (``linear_vae`` and the guide setters) lives
in ``analytic_models.py``.
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

Scalar = Union[float, torch.Tensor]


def gaussian_kl_to_standard_normal(
    loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """KL(N(loc, diag scale^2) || N(0, I)) = -1/2 sum_j (1 + log s_j^2 - m_j^2 - s_j^2), summed over
    the last dimension: the closed form of the mean-field ELBO's KL term."""
    variance = scale.pow(2)
    return -0.5 * (1 + variance.log() - loc.pow(2) - variance).sum(-1)


class LinearGaussian:
    """p(z) = N(0, I), p(x | z) = N(W z + b, sigma^2 I), with ``weight`` W of shape (P, D), ``bias`` b of
    shape (P,) and ``noise_scale`` sigma > 0; every method is in closed form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_scale: Scalar):
        if weight.dim() != 2:
            raise ValueError(
                f"weight must be a (data_dim, latent_dim) matrix, got shape {tuple(weight.shape)}"
            )
        if bias.shape != weight.shape[:1]:
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},) to match weight {tuple(weight.shape)}, "
                f"got {tuple(bias.shape)}"
            )
        noise_scale = torch.as_tensor(
            noise_scale, dtype=weight.dtype, device=weight.device
        )
        if noise_scale.dim() != 0 or not noise_scale > 0:
            raise ValueError(
                f"noise_scale must be one positive number, got {noise_scale}"
            )
        self.weight, self.bias, self.noise_scale = weight, bias, noise_scale

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    def to(self, device: Union[str, torch.device]) -> "LinearGaussian":
        return LinearGaussian(
            self.weight.to(device), self.bias.to(device), self.noise_scale.to(device)
        )

    # -- the generative model ------------------------------------------------------------------
    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I)."""
        eye = torch.eye(
            self.data_dim, dtype=self.weight.dtype, device=self.weight.device
        )
        covariance = self.weight @ self.weight.T + self.noise_scale.pow(2) * eye
        return MultivariateNormal(self.bias, covariance_matrix=covariance)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per data point, shape (N,)."""
        return self.marginal().log_prob(x)

    def sample(
        self, num: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``num`` draws x = W z + b + sigma eps (z, eps standard normal), shape (num, P), drawn on the
        ``generator``'s device and returned on the model's."""
        w = self.weight
        where = generator.device if generator is not None else w.device
        z = torch.randn(
            num, self.latent_dim, generator=generator, dtype=w.dtype, device=where
        ).to(w.device)
        eps = torch.randn(
            num, self.data_dim, generator=generator, dtype=w.dtype, device=where
        ).to(w.device)
        return z @ w.T + self.bias + self.noise_scale * eps

    # -- the exact posterior -------------------------------------------------------------------
    def posterior_map(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The posterior as an affine map of x: ``gain`` G (D, P), ``offset`` c (D,) and the covariance
        Sigma (D, D), with mu(x) = G x + c::

            Sigma = (I + W^T W / sigma^2)^{-1},   G = Sigma W^T / sigma^2,   c = -G b
        """
        variance = self.noise_scale.pow(2)
        eye = torch.eye(
            self.latent_dim, dtype=self.weight.dtype, device=self.weight.device
        )
        precision = eye + self.weight.T @ self.weight / variance
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        gain = covariance @ self.weight.T / variance
        return gain, -gain @ self.bias, covariance

    def posterior(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean (N, D) and covariance (D, D) of p(z | x): mu(x) = Sigma W^T (x - b) / sigma^2 and
        Sigma = (I + W^T W / sigma^2)^{-1}."""
        gain, offset, covariance = self.posterior_map()
        return x @ gain.T + offset, covariance

    def posterior_distribution(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z | x) as a ``MultivariateNormal`` with batch shape (N,)."""
        mean, covariance = self.posterior(x)
        return MultivariateNormal(mean, covariance_matrix=covariance)

    # -- a diagonal Gaussian guide q(z | x) = N(loc, diag scale^2) ---------------------------------
    def expected_log_likelihood(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """The reconstruction term E_q[log p(x | z)] =
        log N(x; W m + b, sigma^2 I) - sum_j s_j^2 ||W_{:,j}||^2 / (2 sigma^2), per data point.
        """
        at_mean = (
            Normal(loc @ self.weight.T + self.bias, self.noise_scale)
            .log_prob(x)
            .sum(-1)
        )
        spread = scale.pow(2) @ self.weight.pow(2).sum(0)
        return at_mean - spread / (2 * self.noise_scale.pow(2))

    def elbo(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """ELBO = E_q[log p(x | z)] - KL(q || N(0, I)) per data point, shape (N,)."""
        return self.expected_log_likelihood(
            x, loc, scale
        ) - gaussian_kl_to_standard_normal(loc, scale)

    def kl_to_posterior(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """KL(q(z | x) || p(z | x)) per data point, from torch's Gaussian-Gaussian KL."""
        q = MultivariateNormal(loc, scale_tril=torch.diag_embed(scale))
        return kl_divergence(q, self.posterior_distribution(x))

    def log_weight_second_moment(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """log E_q[w^2] / p(x)^2 = log int p(z | x)^2 / q(z | x) dz per data point, for the
        importance weights w = p(x, z) / q(z | x) of q = N(m, diag s^2). With P = Sigma^{-1},
        Q = diag s^{-2}, A = 2P - Q (positive definite, else the variance is infinite: +inf)
        and b = 2 P mu - Q m::

            -log|Sigma| + 1/2 log|S| - 1/2 log|A| + 1/2 b^T A^{-1} b - mu^T P mu + 1/2 m^T Q m

        For K draws, the delta-method SE of log p-hat tends to sqrt((E w^2 / p^2 - 1) / K) and
        ESS / K to p(x)^2 / E w^2 (Kong 1992)."""
        mean, covariance = self.posterior(x)
        precision = torch.linalg.inv(covariance)
        q_precision = torch.diag_embed(scale.pow(-2))
        a = 2 * precision - q_precision
        b = 2 * mean @ precision - loc * scale.pow(-2)
        chol, info = torch.linalg.cholesky_ex(a)
        solved = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        value = (
            -torch.logdet(covariance)
            + scale.log().sum(-1)
            - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            + 0.5 * (b * solved).sum(-1)
            - (mean @ precision * mean).sum(-1)
            + 0.5 * (loc.pow(2) * scale.pow(-2)).sum(-1)
        )
        return torch.where(info == 0, value, torch.full_like(value, math.inf))

    def elbo_grad(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Gradients of each data point's ELBO with respect to its ``loc`` and ``log(scale)``::

            d ELBO / d m       = W^T (x - b - W m) / sigma^2 - m
            d ELBO / d log s_j = 1 - s_j^2 (1 + ||W_{:,j}||^2 / sigma^2)

        Both (N, D). (The ELBO is maximized at m = mu(x) and s_j^2 = 1 / Lambda_jj, Lambda the
        posterior precision: the best diagonal q matches the precision's diagonal.)"""
        variance = self.noise_scale.pow(2)
        residual = x - self.bias - loc @ self.weight.T
        grad_loc = residual @ self.weight / variance - loc
        grad_log_scale = 1 - scale.pow(2) * (1 + self.weight.pow(2).sum(0) / variance)
        return grad_loc, grad_log_scale


# -- probabilistic PCA: the maximum-likelihood solution ------------------------------------------


@dataclass
class PPCASolution:
    """The maximum-likelihood linear-Gaussian model of a data set and its exact mean log-likelihood
    per data point, ``-1/2 [P log 2 pi + sum_j log c_j + sum_j lambda_j / c_j]`` (lambda_j the sample
    covariance's eigenvalues, c_j the model covariance's eigenvalues along the same eigenvectors).
    """

    model: LinearGaussian
    mean_log_likelihood: float
    eigenvalues: torch.Tensor


def ppca_maximum_likelihood(
    x: torch.Tensor, latent_dim: int, noise_scale: Optional[Scalar] = None
) -> PPCASolution:
    """Probabilistic PCA fitted by maximum likelihood (Tipping & Bishop 1999, section 3.2).

    With S = (1/N) sum_i (x_i - xbar)(x_i - xbar)^T = U Lambda U^T (eigenvalues descending)::

        b_ML       = xbar
        sigma^2_ML = mean of the P - D discarded eigenvalues lambda_{D+1..P}
        W_ML       = U_D (Lambda_D - sigma^2 I)^{1/2}          (up to a rotation R)

    With ``noise_scale`` given, sigma is held at it and W_ML is the maximizer for that sigma (a
    direction whose eigenvalue is below sigma^2 gets a zero column)."""
    n, p = x.shape
    if not 1 <= latent_dim < p:
        raise ValueError(
            f"latent_dim must be between 1 and data_dim - 1 = {p - 1}, got {latent_dim}"
        )
    if n < 2:
        raise ValueError(
            f"need at least 2 data points to fit probabilistic PCA, got {n}"
        )
    mean = x.mean(0)
    centred = x - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / n)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    if noise_scale is None:
        variance = eigenvalues[latent_dim:].mean()
    else:
        variance = torch.as_tensor(noise_scale, dtype=x.dtype, device=x.device).pow(2)
    kept = eigenvalues[:latent_dim]
    weight = eigenvectors[:, :latent_dim] * (kept - variance).clamp(min=0).sqrt()
    model_eigenvalues = torch.cat(
        [torch.maximum(kept, variance), variance.expand(p - latent_dim)]
    )
    log_likelihood = -0.5 * (
        p * math.log(2 * math.pi)
        + model_eigenvalues.log().sum()
        + (eigenvalues / model_eigenvalues).sum()
    )
    return PPCASolution(
        LinearGaussian(weight, mean, variance.sqrt()),
        log_likelihood.item(),
        eigenvalues,
    )
