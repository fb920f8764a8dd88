"""The hierarchical VAE: L >= 2 stochastic layers z_1 .. z_L, bottom-up or ladder inference.

Generative model (Burda et al. 2016, section 5; Sønderby et al. 2016), per data point in the
plate ``"data"``::

    z_L ~ p(z_L)                         (site "zL": the prior part: standard normal, mixture,
                                          VampPrior, flow, ...)
    z_l ~ N(mu_l(z_{l+1}), diag s_l(z_{l+1})^2)   l = L-1 .. 1   (sites "z{l}")
    x   ~ p(x | decoder(z_1))            (site "x", the likelihood part, observed)

Inference, ``[model] inference``:

* ``bottom_up`` (Burda et al. 2016): q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}), each factor
  the configured guide part (diagonal, full-rank, IAF, ...) on its layer's input.
* ``ladder`` (Sønderby et al. 2016, eq. 17-20): a deterministic pass d_l = f_l(d_{l-1}), d_0 = x,
  gives each layer a Gaussian (mu^_l, s^_l); q(z_L | x) = N(mu^_L, s^_L^2), and for l < L the
  top-down pass merges it with the model's own p(z_l | z_{l+1}) = N(mu_l, s_l^2) by precision::

      q(z_l | z_{l+1}, x) = N((mu^_l s^_l^-2 + mu_l s_l^-2) / (s^_l^-2 + s_l^-2), 1 / (s^_l^-2 + s_l^-2))

  so the guide shares the model's top-down networks (it registers them too).

Every site is scaled by ``kl_weight`` (warm-up, beta) in model and guide alike, as in
``vae.py``. A VampPrior on z_L (Tomczak & Welling 2018) mixes the Gaussians that the top path
gives its pseudo-inputs (``top_gaussian``). Pyro's TraceMeanField_ELBO is correct only when no
latent's model parents descend from it in the guide; bottom-up inference breaks that (z_2 is
drawn from z_1 in the guide but is z_1's parent in the model), so ``meanfield`` is refused there.
"""

import itertools
from typing import List, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.parts.distributions import ReparameterizedNormal
from pyro_vae.parts.guides import MIN_SCALE
from pyro_vae.parts.networks import Architecture
from pyro_vae.parts.priors import PriorContext
from pyro_vae.registry import FAMILIES, GUIDES, LIKELIHOODS, PRIORS

_instances = itertools.count()
Weight = Union[float, torch.Tensor]


def site(layer: int) -> str:
    """The sample site of layer ``layer`` (1-based): ``"z1"`` .. ``"zL"``."""
    return f"z{layer}"


def precision_weighted(
    loc1: torch.Tensor, scale1: torch.Tensor, loc2: torch.Tensor, scale2: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The product of two diagonal Gaussians, renormalized (Sønderby et al. 2016, eq. 19-20):
    precision s^-2 = s1^-2 + s2^-2, mean (mu1 s1^-2 + mu2 s2^-2) s^2."""
    p1, p2 = scale1.pow(-2), scale2.pow(-2)
    variance = 1.0 / (p1 + p2)
    return (loc1 * p1 + loc2 * p2) * variance, variance.sqrt()


class HierarchicalVAE(Family):
    """L stochastic layers; ``encoders[l]`` is layer l+1's guide network (its Gaussian head on
    d_l for ``ladder``), ``conditionals[l]`` the model's p(z_{l+1} | z_{l+2}) (l < L - 1).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        inference: str,
        encoders: Sequence[nn.Module],
        conditionals: Sequence[nn.Module],
        decoder: nn.Module,
        likelihood: nn.Module,
    ):
        super().__init__()
        self.sizes, self.inference = tuple(sizes), inference
        self.encoders = nn.ModuleList(encoders)
        self.conditionals = nn.ModuleList(conditionals)
        self.decoder, self.likelihood = decoder, likelihood
        self.pyro_name = f"hvae{next(_instances)}"
        self.latent_sites = tuple(
            LatentSite(site(layer + 1), size) for layer, size in enumerate(self.sizes)
        )

    def model(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> torch.Tensor:
        """p(x, z_1..z_L) = p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1); the z sites scaled by
        ``kl_weight``, ``"x"`` by ``reconstruction_weight``."""
        parts = ["conditionals", "decoder", "likelihood", "prior"]
        self.register_parts(
            *parts, *["encoders"] * getattr(self.prior, "uses_encoder", 0)
        )
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(site(len(self.sizes)), self.prior())
                for layer in reversed(range(len(self.sizes) - 1)):
                    z = pyro.sample(site(layer + 1), self.conditionals[layer](z))
            with poutine.scale(scale=reconstruction_weight):
                return pyro.sample(OBSERVED, self.likelihood(self.decoder(z)), obs=x)

    def guide(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> List[torch.Tensor]:
        """q(z_1..z_L | x), bottom-up or ladder (see the module docstring); the z's drawn."""
        ladder = self.inference == "ladder"
        self.register_parts("encoders", *["conditionals"] * ladder)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                return self._ladder(x) if ladder else self._bottom_up(x)

    def _bottom_up(self, x: torch.Tensor) -> List[torch.Tensor]:
        zs, h = [], x
        for layer, encoder in enumerate(self.encoders):
            h = pyro.sample(site(layer + 1), encoder(h))
            zs.append(h)
        return zs

    def bottom_up_statistics(self, x: torch.Tensor) -> List[Tuple[torch.Tensor, ...]]:
        """The ladder's deterministic pass: (mu^_l, s^_l) for l = 1..L."""
        stats, d = [], x
        for encoder in self.encoders:
            d = encoder.trunk(d)
            scale = F.softplus(encoder.raw_scale(d)) + MIN_SCALE
            stats.append((encoder.loc(d), scale))
        return stats

    def _ladder(self, x: torch.Tensor) -> List[torch.Tensor]:
        stats = self.bottom_up_statistics(x)
        top = len(self.sizes)
        z = pyro.sample(site(top), ReparameterizedNormal(*stats[-1]).to_event(1))
        zs = [z]
        for layer in reversed(range(top - 1)):
            p = self.conditionals[layer](z).base_dist
            loc, scale = precision_weighted(*stats[layer], p.loc, p.scale)
            z = pyro.sample(
                site(layer + 1), ReparameterizedNormal(loc, scale).to_event(1)
            )
            zs.insert(0, z)
        return zs

    # -- the top path: q's Gaussian for z_L from x alone (the VampPrior evaluates it) --------
    def top_gaussian(self, x: torch.Tensor) -> dist.Distribution:
        """A Gaussian over z_L given x alone: the ladder's N(mu^_L, s^_L^2); bottom-up, the
        top guide's Gaussian at the lower layers' means."""
        if self.inference == "ladder":
            return ReparameterizedNormal(*self.bottom_up_statistics(x)[-1]).to_event(1)
        return self.encoders[-1].gaussian(self._below_top(x))

    def top_posterior(self, x: torch.Tensor) -> dist.Distribution:
        """``top_gaussian`` with the top guide's flows, if any."""
        if self.inference == "ladder":
            return self.top_gaussian(x)
        return self.encoders[-1](self._below_top(x))

    def _below_top(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for encoder in self.encoders[:-1]:
            h = encoder.gaussian(h).mean
        return h

    # -- the hooks and helpers that fit, figures and the API call -----------------------------
    def check_data(self, x: torch.Tensor, where: str) -> None:
        self.likelihood.check_data(x, where)

    def kl_is_analytic(self, x: torch.Tensor) -> bool:
        """Gaussian conditionals always have a closed-form KL; the top layer's depends on the
        prior (``TraceMeanField_ELBO`` is built only for ``ladder``: see the docstring).
        """
        q = self.top_gaussian(x[:1])
        try:
            torch.distributions.kl_divergence(q, self.prior().expand(q.batch_shape))
        except NotImplementedError:
            return False
        return self.inference == "ladder"

    @torch.no_grad()
    def decode(self, z_top: torch.Tensor) -> torch.Tensor:
        """E[x | z_1] with z_l the mean of p(z_l | z_{l+1}) from ``z_top`` = z_L down."""
        z = z_top
        for layer in reversed(range(len(self.sizes) - 1)):
            z = self.conditionals[layer](z).mean
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_1] for one draw of the guide per row of ``x``."""
        z1 = poutine.trace(self.guide).get_trace(x).nodes[site(1)]["value"]
        return self.likelihood.mean(self.decoder(z1))

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """E[x | z_1] for ``num`` ancestral draws z_L ~ p(z_L), z_l ~ p(z_l | z_{l+1})."""
        z = self.prior().sample((num,))
        for layer in reversed(range(len(self.sizes) - 1)):
            z = self.conditionals[layer](z).sample()
        return self.likelihood.mean(self.decoder(z))


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


def _check_pairing(config: Config) -> None:
    inference = config.model.inference
    if inference == "ladder" and config.guide.name != "diagonal":
        raise ConfigError(
            f"[model] inference = 'ladder' merges diagonal Gaussians by precision; it needs "
            f"guide 'diagonal', not '{config.guide.name}' (or use inference 'bottom_up')"
        )
    if inference == "bottom_up" and config.objective.name == "meanfield":
        raise ConfigError(
            "objective 'meanfield' (TraceMeanField_ELBO) is biased with bottom-up inference "
            "(z_2 is drawn from z_1 in the guide but is z_1's parent in the model); use "
            "objective 'trace' or 'iwae', or [model] inference = 'ladder'"
        )


@FAMILIES.register("hierarchical")
def build(config: Config, data_shape: Union[int, Sequence[int]]) -> HierarchicalVAE:
    """L >= 2 stochastic layers (Burda et al. 2016; Sønderby et al. 2016): sizes from
    ``[model] latent_layers``, ``inference`` bottom_up or ladder, p(z_L) the prior part.
    """
    m, sizes = config.model, layer_sizes(config)
    _check_pairing(config)
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
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
        arch = data_arch(sizes[0])
        likelihood = LIKELIHOODS.build(
            config.likelihood.name, arch, config.likelihood.options
        )
        decoder = arch.decoder(getattr(likelihood, "params_per_dim", 1))
        family = HierarchicalVAE(
            sizes, m.inference, encoders, conditionals, decoder, likelihood
        )
        family.prior = PRIORS.build(
            config.prior.name,
            PriorContext(
                data_arch(sizes[-1]), family.top_posterior, family.top_gaussian
            ),
            config.prior.options,
        )
    return family
