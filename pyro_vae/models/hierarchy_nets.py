"""The networks of the ``hierarchical`` family (``hierarchical.py``), built from the config: one
guide part per layer, the model's Gaussian p(z_l | z_{l+1}), the decoder and the likelihood.

What each guide part reads depends on ``[model] inference``:

* ``bottom_up``: layer 1's part reads x, layer l's reads z_{l-1} (Burda et al. 2016);
* ``ladder``: layer 1's part reads x, layer l's reads d_{l-1}, the trunk features below it
  (Sønderby et al. 2016);
* ``coupled``: the top layer's part reads x, layer l < L's reads (x, z_{l+1}) concatenated, and
  the decoder reads (z_1, z_2) (Tomczak & Welling 2018, their two-layer HVAE).
"""

import math
from typing import Sequence, Tuple, Union

from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import GUIDES, LIKELIHOODS

# the objectives that take KL(q || p) in closed form at each latent site
CLOSED_FORM_KL = ("meanfield", "enum_meanfield")


def layer_sizes(config: Config) -> Tuple[int, ...]:
    """``[model] latent_layers``, or two layers of ``latent_dim`` when it is empty; refuses
    fewer than two layers."""
    m = config.model
    sizes = tuple(m.latent_layers) or (m.latent_dim, m.latent_dim)
    if len(sizes) < 2:
        raise ConfigError(
            f"the hierarchical family needs at least 2 stochastic layers, got "
            f"[model] latent_layers = {list(sizes)}; use e.g. [40, 40], or family 'vae'"
        )
    return sizes


def check_pairing(config: Config) -> None:
    """Refuse the inference scheme with a guide, objective or network it cannot use."""
    inference = config.model.inference
    if inference == "ladder" and config.guide.name != "diagonal":
        raise ConfigError(
            f"[model] inference = 'ladder' merges diagonal Gaussians by precision; it needs "
            f"guide 'diagonal', not '{config.guide.name}' (or use inference 'bottom_up')"
        )
    if inference == "bottom_up" and config.objective.name in CLOSED_FORM_KL:
        raise ConfigError(
            f"objective '{config.objective.name}' (closed-form KL) is biased with bottom-up "
            "inference (z_2 is drawn from z_1 in the guide but is z_1's parent in the model); use "
            "objective 'trace' or 'iwae', or [model] inference = 'ladder' or 'coupled'"
        )
    if inference == "coupled" and config.network.name != "mlp":
        raise ConfigError(
            f"[model] inference = 'coupled' feeds (x, z_{{l+1}}) to one fully connected "
            f"network; it needs network 'mlp', not '{config.network.name}'"
        )


def build_networks(
    config: Config, data_shape: Union[int, Sequence[int]], sizes: Tuple[int, ...]
) -> Tuple[list, list, nn.Module, nn.Module]:
    """(encoders, conditionals, decoder, likelihood) for ``sizes`` = (D_1, .., D_L)."""
    m = config.model
    common = dict(hidden=tuple(m.hidden), activation=m.activation)

    def latent_arch(inputs: int, outputs: int) -> Architecture:
        return Architecture.for_data(inputs, outputs, **common)

    def data_arch(outputs: int) -> Architecture:
        return Architecture.for_data(
            data_shape,
            outputs,
            network=config.network.name,
            network_options=dict(config.network.options),
            **common,
        )

    guide, options = config.guide.name, config.guide.options
    if m.inference == "coupled":
        flat = math.prod((data_shape,) if isinstance(data_shape, int) else data_shape)
        encoders = [
            GUIDES.build(guide, latent_arch(flat + above, size), options)
            for size, above in zip(sizes, sizes[1:])
        ] + [GUIDES.build(guide, data_arch(sizes[-1]), options)]
    else:
        encoders = [GUIDES.build(guide, data_arch(sizes[0]), options)]
        for below, size in zip(sizes, sizes[1:]):
            # ladder: layer l reads d_{l-1}, the trunk features below it; bottom-up: z_{l-1}
            ladder = m.inference == "ladder"
            inputs = encoders[-1].loc.in_features if ladder else below
            encoders.append(GUIDES.build(guide, latent_arch(inputs, size), options))
    conditionals = [
        GUIDES.build("diagonal", latent_arch(above, below), {})
        for below, above in zip(sizes, sizes[1:])
    ]
    decoded = sizes[0] + sizes[1] if m.inference == "coupled" else sizes[0]
    arch = data_arch(decoded)
    likelihood = LIKELIHOODS.build(
        config.likelihood.name, arch, config.likelihood.options
    )
    decoder = arch.decoder(getattr(likelihood, "params_per_dim", 1))
    return encoders, conditionals, decoder, likelihood
