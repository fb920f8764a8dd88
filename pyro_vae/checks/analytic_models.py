"""The linear-Gaussian model of ``analytic.py`` written with the library's own parts: fixtures.

``analytic.py`` holds the closed forms and imports torch alone, so the ground truth never depends
on the code it checks. This module builds library objects from it: ``linear_vae`` is a ``vae.VAE``
with no hidden layers (linear decoder and encoder) whose model is exactly a ``LinearGaussian``;
``set_exact_posterior_guide`` and ``set_perturbed_diagonal_guide`` set its encoder;
``true_model`` draws a random model. The check suites (``check_suites.py``) and the tests use them.
"""

from typing import Tuple, Union

import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.config import from_dict
from pyro_vae.models.vae import VAE, build
from pyro_vae.parts.guides import MIN_SCALE, DiagonalGuide, FullRankGuide

LINEAR_GUIDES = {"diagonal": DiagonalGuide, "full_rank": FullRankGuide}


def _linear_encoder(vae: VAE, guide: str) -> Union[DiagonalGuide, FullRankGuide]:
    encoder = vae.encoder
    if type(encoder) is not LINEAR_GUIDES[guide] or len(encoder.trunk) > 0:
        raise ValueError(
            f"expected a VAE with a linear '{guide}' guide (from linear_vae(truth, '{guide}')), got "
            f"{type(encoder).__name__} with {len(encoder.trunk)} trunk layers"
        )
    return encoder


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """The x with softplus(x) = y (y > 0)."""
    return y + torch.log(-torch.expm1(-y))


def fixed_gaussian(noise_scale: Union[float, torch.Tensor]) -> dict:
    """The ``[likelihood]`` section of a model that is exactly a linear-Gaussian truth: the
    Gaussian likelihood at the truth's noise scale sigma, not learned."""
    return {"name": "gaussian", "scale": float(noise_scale), "learn_scale": False}


def linear_vae(truth: LinearGaussian, guide: str = "full_rank") -> VAE:
    """A float64 VAE on ``truth``'s device whose model is exactly ``truth``: linear decoder holding W
    and b, the Gaussian likelihood at sigma, the standard normal prior; a linear ``guide``
    (``diagonal`` or ``full_rank``) left at its random initialization."""
    if guide not in LINEAR_GUIDES:
        raise ValueError(
            f"linear_vae takes the guide 'diagonal' or 'full_rank', got '{guide}'"
        )
    config = from_dict(
        {
            "model": {"latent_dim": truth.latent_dim, "hidden": []},
            "prior": {"name": "standard_normal"},
            "guide": {"name": guide},
            "likelihood": fixed_gaussian(truth.noise_scale),
        }
    )
    vae = build(config, truth.data_dim).double().to(truth.weight.device)
    with torch.no_grad():
        vae.decoder[0].weight.copy_(truth.weight)
        vae.decoder[0].bias.copy_(truth.bias)
        # the likelihood computed its raw scale in float32; set it again in float64
        vae.likelihood.raw_scale.copy_(
            softplus_inverse(truth.noise_scale.expand(truth.data_dim))
        )
    return vae


def set_exact_posterior_guide(vae: VAE, truth: LinearGaussian) -> None:
    """Make a linear ``full_rank`` guide the exact posterior: loc = mu(x) = G x + c, the Cholesky
    factor of Sigma constant (zero weights, biases holding its softplus-inverted diagonal and its
    strictly lower triangle)."""
    encoder = _linear_encoder(vae, "full_rank")
    set_full_rank_encoder(encoder, *truth.posterior_map())


def set_full_rank_encoder(
    encoder: FullRankGuide,
    gain: torch.Tensor,
    offset: torch.Tensor,
    covariance: torch.Tensor,
) -> None:
    """Make a linear ``full_rank`` guide N(gain u + offset, covariance) of its input u."""
    tril = torch.linalg.cholesky(covariance)
    with torch.no_grad():
        encoder.loc.weight.copy_(gain)
        encoder.loc.bias.copy_(offset)
        encoder.raw_diag.weight.zero_()
        encoder.raw_diag.bias.copy_(softplus_inverse(tril.diagonal() - MIN_SCALE))
        encoder.off_diag.weight.zero_()
        encoder.off_diag.bias.copy_(tril[encoder.rows, encoder.cols])


def set_perturbed_diagonal_guide(
    vae: VAE,
    truth: LinearGaussian,
    generator: torch.Generator,
    spread: float = 0.3,
    widen: float = 1.0,
) -> None:
    """Make a linear ``diagonal`` guide an imperfect one: the posterior mean map with relative noise
    ``spread``, and scales that vary with x around the posterior marginal sd times ``widen``, randomly
    mis-scaled by a factor exp(spread * N(0, 1))."""
    encoder = _linear_encoder(vae, "diagonal")
    gain, offset, covariance = truth.posterior_map()

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=gain.dtype).to(
            gain.device
        )

    d, p = gain.shape
    sd = widen * covariance.diagonal().sqrt() * (spread * noise(d)).exp()
    with torch.no_grad():
        encoder.loc.weight.copy_(gain * (1 + spread * noise(d, p)))
        encoder.loc.bias.copy_(offset + spread * noise(d))
        encoder.raw_scale.weight.copy_(0.1 * spread * noise(d, p))
        encoder.raw_scale.bias.copy_(softplus_inverse(sd - MIN_SCALE))


def diagonal_guide_params(
    vae: VAE, x: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The diagonal guide's loc and scale at ``x`` (with the graph to the encoder's parameters)."""
    q = vae.encoder(x).base_dist
    return q.loc, q.scale


def true_model(
    generator: torch.Generator,
    data_dim: int = 6,
    latent_dim: int = 2,
    noise_scale: float = 0.5,
) -> LinearGaussian:
    """A random linear-Gaussian model (float64, on the CPU)."""
    weight = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    bias = torch.randn(data_dim, generator=generator, dtype=torch.float64)
    return LinearGaussian(weight, bias, noise_scale)
