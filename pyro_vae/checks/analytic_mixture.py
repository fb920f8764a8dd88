"""A mixture of linear-Gaussian models in closed form: the ground truth of the semi-supervised
VAE's checks (class y summed, style z integrated exactly).

Model, with K classes, z in R^D and x in R^P::

    p(y)        = pi_y
    p(z)        = N(0, I_D)
    p(x | y, z) = N(W z + b_y, sigma^2 I_P)

Given y it is the linear-Gaussian model of ``analytic.py`` with bias b_y, so everything is
exact:

* p(x | y) = N(b_y, C), C = W W^T + sigma^2 I;  log p(x) = logsumexp_y (log pi_y + log p(x | y))
* p(y | x) = softmax_y (log pi_y + log p(x | y)), a linear function of x inside the softmax:
  logit_y = (C^{-1} b_y)^T x - 1/2 b_y^T C^{-1} b_y + log pi_y (+ a term common to all y)
* p(z | x, y) = N(G (x - b_y), Sigma), the linear-Gaussian posterior with bias b_y
* for q(y | x) = r and q(z | x, y) = N(m_y, diag s_y^2) (Kingma et al. 2014, U(x))::

    ELBO = sum_y r_y [log pi_y + ELBO_y(x; m_y, s_y) - log r_y]

  with ELBO_y the linear-Gaussian ELBO of ``analytic.py`` for bias b_y.

Torch only: it must not depend on the library it checks.
"""

from typing import Tuple

import torch

from pyro_vae.checks.analytic import LinearGaussian


class LinearGaussianMixture:
    """``weight`` W (P, D), ``biases`` b (K, P), ``noise_scale`` sigma, ``log_pi`` (K,)."""

    def __init__(self, weight, biases, noise_scale, log_pi):
        self.weight, self.biases, self.log_pi = weight, biases, log_pi
        self.components = [LinearGaussian(weight, b, noise_scale) for b in biases]
        self.noise_scale = self.components[0].noise_scale

    @property
    def classes(self) -> int:
        return self.biases.shape[0]

    def log_joint_y(self, x: torch.Tensor) -> torch.Tensor:
        """log pi_y + log p(x | y), shape (N, K)."""
        return torch.stack(
            [lp + c.log_marginal(x) for lp, c in zip(self.log_pi, self.components)], -1
        )

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (N,)."""
        return self.log_joint_y(x).logsumexp(-1)

    def class_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """p(y | x), shape (N, K)."""
        return self.log_joint_y(x).softmax(-1)

    def classifier_map(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(A, c) with softmax(A x + c) = p(y | x): A = B C^{-1}, c_y = log pi_y - 1/2 b_y^T
        C^{-1} b_y."""
        cov = self.components[0].marginal().covariance_matrix
        solved = torch.linalg.solve(cov, self.biases.T).T  # rows C^{-1} b_y
        return solved, self.log_pi - 0.5 * (solved * self.biases).sum(-1)

    def posterior_map(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(G, Sigma): p(z | x, y) = N(G (x - b_y), Sigma)."""
        gain, _, covariance = self.components[0].posterior_map()
        return gain, covariance

    def elbo(
        self,
        x: torch.Tensor,
        probs: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """The enumerated ELBO per row for q(y | x) = ``probs`` (N, K) and q(z | x, y) =
        N(``loc``[y], diag ``scale``[y]^2) (both (K, N, D))."""
        per_class = torch.stack(
            [c.elbo(x, m, s) for c, m, s in zip(self.components, loc, scale)], -1
        )
        return (probs * (self.log_pi + per_class - probs.log())).sum(-1)

    def reconstruction_variance(
        self,
        x: torch.Tensor,
        probs: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """Var of the one-draw estimate sum_y r_y log p(x | y, z_y), z_y ~ N(m_y, diag s_y^2)
        drawn independently per class, per row (N,): the Monte Carlo noise an ELBO with
        every other term exact has left. With u = x - W m_y - b_y, A = W diag(s_y) and
        z_y = m_y + s_y eps, log p(x | y, z_y) = const - |u - A eps|^2 / (2 sigma^2), whose
        variance is (4 |A^T u|^2 + 2 |A^T A|_F^2) / (4 sigma^4) (Gaussian eps: the linear and
        quadratic parts are uncorrelated, Var(eps^T M eps) = 2 tr M^2)."""
        u = x - loc @ self.weight.T - self.biases[:, None, :]  # (K, N, P)
        a = self.weight * scale[..., None, :]  # (K, N, P, D)
        linear = (u[..., None] * a).sum(-2).pow(2).sum(-1)
        gram = a.transpose(-1, -2) @ a
        quadratic = gram.pow(2).sum((-1, -2))
        per_class = (4 * linear + 2 * quadratic) / (4 * self.noise_scale**4)
        return (probs.pow(2) * per_class.T).sum(-1)

    def sample(
        self, n: int, generator: torch.Generator
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x, y): n draws from the model."""
        y = torch.multinomial(self.log_pi.exp(), n, True, generator=generator)
        z = torch.randn(
            n, self.weight.shape[1], generator=generator, dtype=self.weight.dtype
        )
        noise = torch.randn(n, self.weight.shape[0], generator=generator, dtype=z.dtype)
        return z @ self.weight.T + self.biases[y] + self.noise_scale * noise, y


def random_mixture(
    generator: torch.Generator, classes: int = 3, data_dim: int = 6, latent_dim: int = 2
) -> LinearGaussianMixture:
    """A random mixture (float64, CPU) whose classes overlap: p(y | x) is far from one-hot."""
    weight = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    biases = 0.8 * torch.randn(
        classes, data_dim, generator=generator, dtype=torch.float64
    )
    log_pi = torch.randn(classes, generator=generator, dtype=torch.float64).log_softmax(
        0
    )
    return LinearGaussianMixture(weight, biases, 0.7, log_pi)
