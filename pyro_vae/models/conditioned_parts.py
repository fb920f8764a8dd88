"""The registered parts of a family whose guide and decoder read an extra input.

The semi-supervised VAE (``semi_supervised.py``) and the conditional VAE (``conditional.py``)
both condition their networks on something beside x or z: the guide reads the row ``[x, c]``
and the decoder the row ``[z, c]`` (c: a one-hot class, or the given part of an image). This
module builds those parts from the config's registries, sized for the extra input, and joins
rows whose leading (enumeration, particle, plate) dimensions differ by broadcasting.
"""

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.parts.networks import Architecture
from pyro_vae.parts.priors import PriorContext
from pyro_vae.registry import GUIDES, LIKELIHOODS, PRIORS


@dataclass
class ConditionedParts:
    """``guide``: q(z | [x, c]); ``decoder``: [z, c] -> the likelihood's parameters;
    ``likelihood`` and ``prior`` as the config names them; ``arch``: the data's architecture
    (for a classifier or a prior network over x alone)."""

    arch: Architecture
    guide: nn.Module
    decoder: nn.Module
    likelihood: nn.Module
    prior: nn.Module


def join(*rows: torch.Tensor) -> torch.Tensor:
    """Concatenate rows along the last dimension, broadcasting their leading dimensions (an
    enumerated y of shape (K, 1, 1, K) beside z of shape (P, N, L) gives (K, P, N, L + K)).
    """
    lead = torch.broadcast_shapes(*(r.shape[:-1] for r in rows))
    return torch.cat([r.expand(*lead, r.shape[-1]) for r in rows], -1)


def build_parts(
    config: Config,
    data_shape: Union[int, Sequence[int]],
    context_dim: int,
    family: str,
) -> ConditionedParts:
    """The parts, drawn from ``train.seed`` (the global RNG is left as it was). The guide's
    trunk is an MLP over ``[x, c]`` (``[model] hidden``); the decoder is the configured
    network over ``[z, c]``. Convolutional networks are refused (the guide's input is not an
    image)."""
    m = config.model
    if config.network.name != "mlp":
        raise ConfigError(
            f"the {family} family reads [x, c] rows in its guide and supports only the mlp "
            f"network, got '{config.network.name}'; use --network mlp"
        )
    shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(data_shape)
    data_dim = math.prod(shape)
    common = dict(hidden=tuple(m.hidden), activation=m.activation)
    arch = Architecture(data_dim, m.latent_dim, shape=shape, **common)
    guide_arch = Architecture(data_dim + context_dim, m.latent_dim, **common)
    decoder_arch = Architecture(data_dim, m.latent_dim + context_dim, **common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        guide = GUIDES.build(config.guide.name, guide_arch, config.guide.options)
        likelihood = LIKELIHOODS.build(
            config.likelihood.name, arch, config.likelihood.options
        )
        prior = PRIORS.build(
            config.prior.name,
            PriorContext(guide_arch, guide.forward, guide.gaussian),
            config.prior.options,
        )
        if getattr(prior, "uses_encoder", False):
            raise ConfigError(
                f"the {family} family's guide reads [x, c]; the prior "
                f"'{config.prior.name}' runs the guide on pseudo-inputs x alone: choose "
                f"another prior"
            )
        decoder = decoder_arch.decoder(getattr(likelihood, "params_per_dim", 1))
    return ConditionedParts(arch, guide, decoder, likelihood, prior)
