"""The two-layer linear-Gaussian model in closed form: ground truth for the hierarchical family.

Model, with z_2 in R^D2, z_1 in R^D1, x in R^P::

    p(z_2)       = N(0, I)
    p(z_1 | z_2) = N(A z_2 + a, diag s^2)
    p(x | z_1)   = N(W z_1 + b, sigma^2 I)

The stacked latent z = (z_1, z_2) is Gaussian with mean m_z = (a, 0) and covariance
S_z = [[A A^T + diag s^2, A], [A^T, I]], and x = H z + b + eps with H = [W, 0]. Exactly:

* p(x) = N(W a + b, W (A A^T + diag s^2) W^T + sigma^2 I)
* p(z | x) = N(mu(x), Sigma), Sigma = (S_z^-1 + H^T H / sigma^2)^-1,
  mu(x) = Sigma (S_z^-1 m_z + H^T (x - b) / sigma^2)
* the chain is Markov, so p(z_2 | z_1, x) = p(z_2 | z_1) = N(A^T C^-1 (z_1 - a), I - A^T C^-1 A)
  with C = A A^T + diag s^2: bottom-up inference q(z_1 | x) q(z_2 | z_1) holds the exact posterior.
* a Gaussian q(z | x) = N(m, V) has ELBO = log p(x) - KL(q || p(z | x)).

The ladder's top-down q(z_1 | z_2, x) merges p(z_1 | z_2) with a diagonal Gaussian in z_1 alone;
it is exact when W^T W is diagonal (``LinearHierarchy.ladder_exact``) and p(z_2 | x) is too (A
diagonal). ``chain`` turns a first factor N(m, V) and a linear-Gaussian second factor
N(G u + g, V2) into their joint. Torch alone: this module must not depend on the library.
"""

from typing import Optional, Tuple

import torch
from torch.distributions import MultivariateNormal, kl_divergence


def chain(
    mean: torch.Tensor,
    cov: torch.Tensor,
    gain: torch.Tensor,
    offset: torch.Tensor,
    cov2: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Joint of u ~ N(mean, cov) (mean (N, Du), cov (Du, Du) or (N, Du, Du)) and v | u ~
    N(gain u + offset, cov2) (gain (Dv, Du), offset (Dv,) or (N, Dv)): mean (N, Du + Dv) and
    covariance [[V, V G^T], [G V, G V G^T + V2]] over (u, v)."""
    v_mean = (gain @ mean.unsqueeze(-1)).squeeze(-1) + offset
    cross = gain @ cov  # (.., Dv, Du)
    both = cross @ gain.transpose(-1, -2) + cov2
    batch = torch.broadcast_shapes(cov.shape[:-2], cross.shape[:-2], both.shape[:-2])
    cov, cross, both = (t.expand(*batch, *t.shape[-2:]) for t in (cov, cross, both))
    top = torch.cat([cov, cross.transpose(-1, -2)], -1)
    bottom = torch.cat([cross, both], -1)
    return torch.cat([mean, v_mean], -1), torch.cat([top, bottom], -2)


class LinearHierarchy:
    """The two-layer linear-Gaussian model above (float64 tensors): ``top`` A (D1, D2), ``shift``
    a (D1,), ``spread`` s (D1,), ``weight`` W (P, D1), ``bias`` b (P,), ``noise_scale`` sigma.
    """

    def __init__(self, top, shift, spread, weight, bias, noise_scale: float):
        self.top, self.shift, self.spread = top, shift, spread
        self.weight, self.bias = weight, bias
        self.noise_scale = torch.as_tensor(noise_scale, dtype=weight.dtype)
        self.sizes = (top.shape[0], top.shape[1])

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    def _eye(self, n: int) -> torch.Tensor:
        return torch.eye(n, dtype=self.weight.dtype)

    def z1_covariance(self) -> torch.Tensor:
        """C = A A^T + diag s^2, the prior covariance of z_1."""
        return self.top @ self.top.T + torch.diag(self.spread.pow(2))

    def prior_joint(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """m_z, S_z of the stacked (z_1, z_2) under the prior."""
        d2 = self.sizes[1]
        mean, cov = chain(
            torch.zeros(1, d2, dtype=self.top.dtype),
            self._eye(d2),
            self.top,
            self.shift,
            torch.diag(self.spread.pow(2)),
        )  # over (z_2, z_1): reorder to (z_1, z_2)
        order = torch.cat([torch.arange(d2, d2 + self.sizes[0]), torch.arange(d2)])
        return mean[0, order], cov[order][:, order]

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(W a + b, W C W^T + sigma^2 I)."""
        cov = self.weight @ self.z1_covariance() @ self.weight.T
        cov = cov + self.noise_scale.pow(2) * self._eye(self.data_dim)
        return MultivariateNormal(self.weight @ self.shift + self.bias, cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per row, shape (N,)."""
        return self.marginal().log_prob(x)

    def sample(
        self, num: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``num`` ancestral draws of x, shape (num, P)."""

        def noise(d):
            return torch.randn(num, d, generator=generator, dtype=self.weight.dtype)

        z2 = noise(self.sizes[1])
        z1 = z2 @ self.top.T + self.shift + self.spread * noise(self.sizes[0])
        return z1 @ self.weight.T + self.bias + self.noise_scale * noise(self.data_dim)

    def posterior(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """mu(x) (N, D1 + D2) and Sigma over the stacked (z_1, z_2)."""
        mean, cov = self.prior_joint()
        h = torch.cat(
            [self.weight, torch.zeros(self.data_dim, self.sizes[1], dtype=mean.dtype)],
            -1,
        )
        variance = self.noise_scale.pow(2)
        prior_precision = torch.linalg.inv(cov)
        sigma = torch.linalg.inv(prior_precision + h.T @ h / variance)
        sigma = (sigma + sigma.T) / 2
        mu = (prior_precision @ mean + (x - self.bias) @ h / variance) @ sigma
        return mu, sigma

    def posterior_distribution(self, x: torch.Tensor) -> MultivariateNormal:
        mu, sigma = self.posterior(x)
        return MultivariateNormal(mu, covariance_matrix=sigma)

    def exact_bottom_up(self):
        """The exact bottom-up factors as affine maps with constant covariances:
        q(z_1 | x) = N(G1 x + c1, V1), q(z_2 | z_1) = N(G2 z_1 + c2, V2); returns
        ((G1, c1, V1), (G2, c2, V2))."""
        d1 = self.sizes[0]
        probe = torch.cat(
            [self.bias.unsqueeze(0), self.bias + self._eye(self.data_dim)]
        )
        mu, sigma = self.posterior(probe)
        g1 = (mu[1:, :d1] - mu[:1, :d1]).T
        c1 = mu[0, :d1] - g1 @ self.bias
        solve = torch.linalg.solve(self.z1_covariance(), self.top)  # C^-1 A
        g2 = solve.T
        v2 = self._eye(self.sizes[1]) - self.top.T @ solve
        return (g1, c1, sigma[:d1, :d1]), (g2, -g2 @ self.shift, (v2 + v2.T) / 2)

    def ladder_exact(self) -> bool:
        """Whether a diagonal ladder guide can be exact: W^T W and A diagonal (square A)."""
        wtw = self.weight.T @ self.weight
        square = self.top.shape[0] == self.top.shape[1]
        return bool(
            square
            and torch.allclose(wtw, torch.diag(wtw.diagonal()))
            and torch.allclose(self.top, torch.diag(self.top.diagonal()))
        )

    def elbo(self, x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
        """ELBO of q(z | x) = N(mean, cov) over the stacked (z_1, z_2), per row:
        log p(x) - KL(q || p(z | x))."""
        q = MultivariateNormal(mean, covariance_matrix=cov)
        return self.log_marginal(x) - kl_divergence(q, self.posterior_distribution(x))


def random_hierarchy(
    generator: torch.Generator,
    data_dim: int = 6,
    sizes: Tuple[int, int] = (3, 2),
    noise_scale: float = 0.5,
    ladder: bool = False,
) -> LinearHierarchy:
    """A random model (float64). With ``ladder``, W has orthogonal columns and A is diagonal
    (D1 = D2 required), so that the diagonal ladder guide can hold the exact posterior.
    """

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    d1, d2 = sizes
    spread = 0.5 + normal(d1).abs()
    if ladder:
        if d1 != d2:
            raise ValueError(f"the ladder-exact model needs D1 = D2, got {sizes}")
        q, _ = torch.linalg.qr(normal(data_dim, d1))
        weight, top = q * (1 + normal(d1).abs()), torch.diag(1 + normal(d1).abs())
    else:
        weight, top = normal(data_dim, d1), normal(d1, d2)
    return LinearHierarchy(
        top, normal(d1), spread, weight, normal(data_dim), noise_scale
    )
