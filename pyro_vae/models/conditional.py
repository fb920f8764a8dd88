"""The conditional VAE of Sohn, Lee & Yan (2015): complete an image from a given part of it.

The row x splits into the given pixels c (``[model] given`` quadrants of each image: 1 = the
top-left quadrant, 2 = the top half, 3 = all but the bottom-right quadrant) and the target
pixels t, the rest. Per data point (plate ``"data"``)::

    z ~ p(z | c) = N(mu(c), diag sigma(c)^2)    (site "z", a Gaussian prior network on c)
    t ~ p(t | decoder([z, c]))                  (site "x", the likelihood over t alone)

Guide: z ~ q(z | x) = q(z | t, c) (the guide registry on the whole row, which is [t, c]).
Every estimator of the library then gives the conditional quantities through the traces: the
ELBO is the conditional ELBO of log p(t | c) (the negative of Pyro's CVAE tutorial's figure),
and importance sampling gives log p(t | c) = log E_q[p(t, z | c) / q(z | t, c)].
"""

import itertools
from typing import Sequence, Union

import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.models.conditioned_parts import build_parts, join
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import FAMILIES, GUIDES

LATENT = "z"
_instances = itertools.count()
Weight = Union[float, torch.Tensor]


def quadrant_mask(shape: Sequence[int], given: int) -> torch.Tensor:
    """A bool row of length prod(shape): True on the pixels of the first ``given`` quadrants
    (top-left, top-right, bottom-left) of every channel of a (C, H, W) image."""
    if len(shape) != 3:
        raise ConfigError(
            f"the conditional family's quadrants need images (C, H, W), got data of shape "
            f"{tuple(shape)}"
        )
    if not 1 <= given <= 3:
        raise ConfigError(f"[model] given must be 1, 2 or 3 quadrants, got {given}")
    _, h, w = shape
    mask = torch.zeros(tuple(shape), dtype=torch.bool)
    top, left = slice(0, h // 2), slice(0, w // 2)
    quadrants = [(top, left), (top, slice(w // 2, w)), (slice(h // 2, h), left)]
    for rows, cols in quadrants[:given]:
        mask[:, rows, cols] = True
    return mask.flatten()


class Conditional(Family):
    """The CVAE (see the module's docstring): ``guide`` q(z | x), ``prior_net`` p(z | c),
    ``decoder`` [z, c] -> the likelihood's parameters for the target pixels."""

    unconditional = (
        False  # p(z | c): the diagnostics of a prior of z alone do not apply
    )

    def __init__(self, given_mask, latent_dim, guide, prior_net, decoder, likelihood):
        super().__init__()
        self.register_buffer("given_mask", given_mask)
        self.encoder, self.prior_net = guide, prior_net
        self.decoder, self.likelihood = decoder, likelihood
        self.pyro_name = f"cvae{next(_instances)}"
        self.latent_sites = (LatentSite(LATENT, latent_dim),)

    def split(self, x: torch.Tensor):
        """(given c, target t) pixels of rows x."""
        return x[..., self.given_mask], x[..., ~self.given_mask]

    def check_data(self, x: torch.Tensor, where: str) -> None:
        self.likelihood.check_data(self.split(x)[1], where)

    def model(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> None:
        """p(t, z | c) for the rows of x."""
        self.register_parts("prior_net", "decoder", "likelihood")
        c, t = self.split(x)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(LATENT, self.prior_net(c))
            with poutine.scale(scale=reconstruction_weight):
                out = self.decoder(join(z, c))
                pyro.sample(OBSERVED, self.likelihood(out), obs=t)

    def guide(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> None:
        """q(z | t, c), the guide part on the whole row."""
        self.register_parts("encoder")
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                pyro.sample(LATENT, self.encoder(x))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num: int = 1) -> torch.Tensor:
        """``num`` completions of each row: the given pixels kept, the target pixels
        E[t | z, c] for z ~ p(z | c); shape (num, N, D)."""
        c, _ = self.split(x)
        z = self.prior_net(c).sample((num,))
        out = x.expand(num, *x.shape).clone()
        out[..., ~self.given_mask] = self.likelihood.mean(self.decoder(join(z, c)))
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The target pixels decoded from z ~ q(z | x), the given ones kept."""
        c, _ = self.split(x)
        out = x.clone()
        out[..., ~self.given_mask] = self.likelihood.mean(
            self.decoder(join(self.encoder(x).sample(), c))
        )
        return out

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """Refused: a CVAE draws completions of given pixels (``complete``)."""
        raise ConfigError(
            "the conditional family completes given pixels; see completions.png "
            "(Conditional.complete) instead of samples from p(z)"
        )


@FAMILIES.register("conditional")
def build(config: Config, data_shape: Union[int, Sequence[int]]) -> Conditional:
    """The conditional VAE (Sohn et al. 2015) completing images from given quadrants."""
    shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(data_shape)
    mask = quadrant_mask(shape, config.model.given)
    given, target = int(mask.sum()), int((~mask).sum())
    parts = build_parts(config, target, given, "conditional")
    m = config.model
    prior_arch = Architecture(given, m.latent_dim, tuple(m.hidden), m.activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed + 1)
        prior_net: nn.Module = GUIDES.build("diagonal", prior_arch, {})
    return Conditional(
        mask, m.latent_dim, parts.guide, prior_net, parts.decoder, parts.likelihood
    )
