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
* ``coupled`` (Tomczak & Welling 2018, their two-layer HVAE): q(z_L | x), then top-down
  q(z_l | x, z_{l+1}) for l < L, each the configured guide part on (x, z_{l+1}) concatenated;
  the model's likelihood then reads both lower layers, p(x | z_1, z_2).

Every site is scaled by ``kl_weight`` (warm-up, beta) in model and guide alike, as in
``vae.py``. A VampPrior on z_L (Tomczak & Welling 2018) mixes the Gaussians that the top path
gives its pseudo-inputs (``top_gaussian``). Pyro's TraceMeanField_ELBO is correct only when no
latent's model parents descend from it in the guide; bottom-up inference breaks that (z_2 is
drawn from z_1 in the guide but is z_1's parent in the model), so ``meanfield`` is refused there;
the ladder and the coupled guide draw z_L first, as the model does. The networks are built in
``hierarchy_nets.py``.
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
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.models.hierarchy_nets import build_networks, check_pairing, layer_sizes
from pyro_vae.parts.distributions import ReparameterizedNormal
from pyro_vae.parts.guides import MIN_SCALE
from pyro_vae.parts.networks import Architecture
from pyro_vae.parts.priors import PriorContext
from pyro_vae.registry import FAMILIES, PRIORS

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
                zs = [pyro.sample(site(len(self.sizes)), self.prior())]
                for layer in reversed(range(len(self.sizes) - 1)):
                    z = pyro.sample(site(layer + 1), self.conditionals[layer](zs[0]))
                    zs.insert(0, z)
            with poutine.scale(scale=reconstruction_weight):
                decoded = self.decoder(self.decoder_input(zs))
                return pyro.sample(OBSERVED, self.likelihood(decoded), obs=x)

    def decoder_input(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """What the decoder reads from the layers (z_1, .., z_L): z_1, or (z_1, z_2) coupled."""
        if self.inference == "coupled":
            return torch.cat([zs[0], zs[1]], -1)
        return zs[0]

    def guide(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> List[torch.Tensor]:
        """q(z_1..z_L | x), bottom-up or ladder (see the module docstring); the z's drawn."""
        ladder = self.inference == "ladder"
        self.register_parts("encoders", *["conditionals"] * ladder)
        scheme = {"ladder": self._ladder, "coupled": self._coupled}
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                return scheme.get(self.inference, self._bottom_up)(x)

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

    def _coupled(self, x: torch.Tensor) -> List[torch.Tensor]:
        flat = x.reshape(x.shape[0], -1)
        zs = [pyro.sample(site(len(self.sizes)), self.encoders[-1](x))]
        for layer in reversed(range(len(self.sizes) - 1)):
            above = zs[0]
            inputs = torch.cat([flat.expand(*above.shape[:-1], -1), above], -1)
            zs.insert(0, pyro.sample(site(layer + 1), self.encoders[layer](inputs)))
        return zs

    # -- the top path: q's Gaussian for z_L from x alone (the VampPrior evaluates it) --------
    def top_gaussian(self, x: torch.Tensor) -> dist.Distribution:
        """A Gaussian over z_L given x alone: the ladder's N(mu^_L, s^_L^2); bottom-up, the
        top guide's Gaussian at the lower layers' means; coupled, the top guide's on x.
        """
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
        if self.inference == "coupled":
            return h
        for encoder in self.encoders[:-1]:
            h = encoder.gaussian(h).mean
        return h

    # -- the hooks and helpers that fit, figures and the API call -----------------------------
    def check_data(self, x: torch.Tensor, where: str) -> None:
        self.likelihood.check_data(x, where)

    def kl_is_analytic(self, x: torch.Tensor) -> bool:
        """Gaussian conditionals always have a closed-form KL; the top layer's depends on the
        prior (``TraceMeanField_ELBO`` is built only for ``ladder`` and ``coupled``: see the
        docstring).
        """
        q = self.top_gaussian(x[:1])
        try:
            torch.distributions.kl_divergence(q, self.prior().expand(q.batch_shape))
        except NotImplementedError:
            return False
        return self.inference in ("ladder", "coupled")

    @torch.no_grad()
    def decode(self, z_top: torch.Tensor) -> torch.Tensor:
        """E[x | z_1 (, z_2)] with z_l the mean of p(z_l | z_{l+1}) from ``z_top`` = z_L down."""
        zs = [z_top]
        for layer in reversed(range(len(self.sizes) - 1)):
            zs.insert(0, self.conditionals[layer](zs[0]).mean)
        return self.likelihood.mean(self.decoder(self.decoder_input(zs)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_1 (, z_2)] for one draw of the guide per row of ``x``."""
        trace = poutine.trace(self.guide).get_trace(x)
        zs = [trace.nodes[site(layer + 1)]["value"] for layer in range(len(self.sizes))]
        return self.likelihood.mean(self.decoder(self.decoder_input(zs)))

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """E[x | z_1 (, z_2)] for ``num`` ancestral draws z_L ~ p(z_L), z_l ~ p(z_l | z_{l+1})."""
        zs = [self.prior().sample((num,))]
        for layer in reversed(range(len(self.sizes) - 1)):
            zs.insert(0, self.conditionals[layer](zs[0]).sample())
        return self.likelihood.mean(self.decoder(self.decoder_input(zs)))


@FAMILIES.register("hierarchical")
def build(config: Config, data_shape: Union[int, Sequence[int]]) -> HierarchicalVAE:
    """L >= 2 stochastic layers (Burda et al. 2016; Sønderby et al. 2016; Tomczak & Welling
    2018): sizes from ``[model] latent_layers``, ``inference`` bottom_up, ladder or coupled,
    p(z_L) the prior part.
    """
    sizes = layer_sizes(config)
    check_pairing(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        encoders, conditionals, decoder, likelihood = build_networks(
            config, data_shape, sizes
        )
        family = HierarchicalVAE(
            sizes, config.model.inference, encoders, conditionals, decoder, likelihood
        )
        arch = Architecture.for_data(
            data_shape,
            sizes[-1],
            network=config.network.name,
            network_options=dict(config.network.options),
            hidden=tuple(config.model.hidden),
            activation=config.model.activation,
        )
        family.prior = PRIORS.build(
            config.prior.name,
            PriorContext(arch, family.top_posterior, family.top_gaussian),
            config.prior.options,
        )
    return family
