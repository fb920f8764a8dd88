"""The VAE: one ``nn.Module`` owning the parts, and the two Pyro programs ``model`` and ``guide``.

Generative model (Kingma & Welling 2014), for each data point i in the plate ``"data"``::

    z_i ~ p(z)                 (site "z", the prior part)
    x_i ~ p(x | decoder(z_i))  (site "x", the likelihood part, observed)

Guide: ``z_i ~ q(z | x_i)`` (site "z", the guide part). Both programs take ``kl_weight`` (beta,
or the warm-up factor): the ``"z"`` site is scaled by it in model and guide alike with
``poutine.scale``. With the ``trace`` and ``meanfield`` objectives the ELBO's KL term, and only
that term, is multiplied by it; with ``iwae`` it tempers log p(z) - log q(z | x) inside every
importance weight (see objectives.py), and ``IWAE`` warns.
"""

import itertools
from typing import Union

import pyro
import torch
from pyro import poutine
from torch import nn

from .config import Config
from .networks import Architecture
from .priors import PriorContext
from .registry import GUIDES, LIKELIHOODS, PRIORS

LATENT = "z"
OBSERVED = "x"
DATA_PLATE = "data"

_instances = itertools.count()

Weight = Union[float, torch.Tensor]


class VAE(nn.Module):
    """A VAE built from an encoder (guide), decoder, likelihood head and prior.

    Each program registers the networks it runs with ``pyro.module``, under names prefixed by
    the instance's own name (``vae0.decoder``, ``vae0.encoder``, ...), so that several VAEs in
    one process never share entries of Pyro's param store. The model registers the decoder, the
    likelihood head and the prior (and the encoder when the prior runs it, as the VampPrior
    does); the guide registers the encoder. Registering only what a program uses also keeps
    Pyro's per-call bookkeeping down (each parameter is a message through the handler stack).
    """

    def __init__(
        self,
        arch: Architecture,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        prior: nn.Module,
    ):
        super().__init__()
        self.arch = arch
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.pyro_name = f"vae{next(_instances)}"
        model_parts = ["decoder", "likelihood", "prior"]
        if getattr(prior, "uses_encoder", False):
            model_parts.append("encoder")
        self._model_parts = self._with_parameters(model_parts)
        self._guide_parts = self._with_parameters(["encoder"])

    def _with_parameters(self, names):
        """(param-store prefix, module) for each named part that has parameters."""
        return [
            (f"{self.pyro_name}.{name}", getattr(self, name))
            for name in names
            if any(True for _ in getattr(self, name).parameters())
        ]

    def release_params(self) -> None:
        """Forget this VAE's entries in Pyro's param store, so that ``pyro.module`` registers the
        module's current tensors (after ``.to(device)`` or loading a checkpoint) on the next call.
        """
        store = pyro.get_param_store()
        for name in [n for n in store.keys() if n.startswith(self.pyro_name + ".")]:
            del store[name]

    def model(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> torch.Tensor:
        """p(x, z) = p(z) p(x | z), ``x`` observed, one plate over the rows of ``x``. The
        ``"z"`` site is scaled by ``kl_weight``, the ``"x"`` site by ``reconstruction_weight``
        (lambda_rec; see schedules.py)."""
        for name, part in self._model_parts:
            pyro.module(name, part)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(LATENT, self.prior())
            with poutine.scale(scale=reconstruction_weight):
                return pyro.sample(OBSERVED, self.likelihood(self.decoder(z)), obs=x)

    def guide(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> torch.Tensor:
        """q(z | x), amortized by the encoder (``reconstruction_weight``, unused here, is the
        model's argument: SVI passes both programs the same arguments)."""
        for name, part in self._guide_parts:
            pyro.module(name, part)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                return pyro.sample(LATENT, self.encoder(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] for one draw z ~ q(z | x) per row of ``x``."""
        return self.likelihood.mean(self.decoder(self.encoder(x).sample()))

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """E[x | z] for ``num`` draws z ~ p(z)."""
        z = self.prior().sample((num,))
        return self.likelihood.mean(self.decoder(z))

    def kl_is_analytic(self, x: torch.Tensor) -> bool:
        """Whether torch/Pyro has a closed-form KL(q(z|x) || p(z)) for this guide-prior pair
        (TraceMeanField_ELBO uses it when it exists, a Monte Carlo estimate otherwise).
        """
        q = self.encoder(x[:1])
        try:
            torch.distributions.kl_divergence(q, self.prior().expand(q.batch_shape))
        except NotImplementedError:
            return False
        return True


def build(config: Config, data_dim: int) -> VAE:
    """Turn a config into a VAE: registries turn part names into parts. The initial weights
    are a function of the config alone (drawn from ``train.seed``; the global RNG is left as
    it was)."""
    m = config.model
    arch = Architecture(data_dim, m.latent_dim, tuple(m.hidden), m.activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        encoder = GUIDES.build(config.guide.name, arch, config.guide.options)
        likelihood = LIKELIHOODS.build(
            config.likelihood.name, arch, config.likelihood.options
        )
        prior = PRIORS.build(
            config.prior.name,
            PriorContext(arch, encoder.forward, encoder.gaussian),
            config.prior.options,
        )
        decoder = arch.decoder()
    return VAE(arch, encoder, decoder, likelihood, prior)
