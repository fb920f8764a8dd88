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
from typing import Sequence, Union

import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.parts.networks import Architecture
from pyro_vae.parts.priors import PriorContext
from pyro_vae.registry import FAMILIES, GUIDES, LIKELIHOODS, PRIORS

LATENT = "z"

_instances = itertools.count()
PARTS = ("encoder", "decoder", "likelihood", "prior")

Weight = Union[float, torch.Tensor]


class VAE(Family):
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
        self.latent_sites = (LatentSite(LATENT, arch.latent_dim),)
        self.check_decoder()

    def __setattr__(self, name: str, value) -> None:
        """Swapping a part (``vae.decoder = MyNet()``) after construction: the new module must be
        an ``nn.Module``, and the old part's entries in Pyro's param store are dropped, so that
        ``pyro.module`` registers (and SVI trains) the new module's own parameters."""
        if name in PARTS and "pyro_name" in self.__dict__:
            if not isinstance(value, nn.Module):
                raise ConfigError(
                    f"VAE.{name} must be a torch.nn.Module, got {type(value).__name__}"
                )
            if name == "encoder" and getattr(self.prior, "uses_encoder", False):
                if not hasattr(value, "gaussian"):
                    raise ConfigError(
                        "the prior runs the encoder's gaussian(x) (VampPrior), but the new "
                        f"encoder {type(value).__name__} has no gaussian method"
                    )
                self.prior.encode = value.gaussian
            self.release_params(name)
        super().__setattr__(name, value)
        if name in ("decoder", "likelihood") and "pyro_name" in self.__dict__:
            self.check_decoder()

    @torch.no_grad()
    def check_decoder(self) -> None:
        """Refuse a decoder whose output is not ``params_per_dim * data_dim`` wide (one probe
        through it with two z's)."""
        z = torch.zeros(2, self.arch.latent_dim)
        for p in itertools.chain(self.decoder.parameters(), self.decoder.buffers()):
            z = z.to(p)
            break
        width = getattr(self.likelihood, "params_per_dim", 1) * self.arch.data_dim
        try:
            shape = tuple(self.decoder(z).shape)
        except RuntimeError as err:
            raise ConfigError(
                f"the decoder fails on z of shape (2, {self.arch.latent_dim}): {err}"
            ) from None
        if shape != (2, width):
            raise ConfigError(
                f"the decoder maps z of shape (2, {self.arch.latent_dim}) to {shape}, but the "
                f"'{getattr(self.likelihood, 'name', 'likelihood')}' likelihood needs "
                f"(2, {width}): params_per_dim x data_dim numbers per row (to change decoder "
                f"and likelihood together, build a new VAE(arch, encoder, decoder, likelihood, "
                f"prior))"
            )

    def _with_parameters(self, names):
        """(param-store prefix, module) for each named part that has parameters, read from the
        attributes at call time, so that a swapped part is the one registered."""
        return [
            (f"{self.pyro_name}.{name}", getattr(self, name))
            for name in names
            if any(True for _ in getattr(self, name).parameters())
        ]

    @property
    def _model_parts(self):
        names = ["decoder", "likelihood", "prior"]
        if getattr(self.prior, "uses_encoder", False):
            names.append("encoder")
        return self._with_parameters(names)

    @property
    def _guide_parts(self):
        return self._with_parameters(["encoder"])

    def check_data(self, x: torch.Tensor, where: str) -> None:
        """The likelihood's check: binary data for a Bernoulli, grey levels for 8 bits, ..."""
        self.likelihood.check_data(x, where)

    def release_params(self, part: str = "") -> None:
        """Forget this VAE's entries in Pyro's param store (only those of ``part`` when given),
        so that ``pyro.module`` registers the module's current tensors (after ``.to(device)``,
        loading a checkpoint, or swapping the part) on the next call.
        """
        prefix = f"{self.pyro_name}.{part + '$$$' if part else ''}"
        store = pyro.get_param_store()
        for name in [n for n in store.keys() if n.startswith(prefix)]:
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
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] per row of ``z``."""
        return self.likelihood.mean(self.decoder(z))

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


@FAMILIES.register("vae")
def build(config: Config, data_shape: Union[int, Sequence[int]]) -> VAE:
    """One latent layer z (Kingma & Welling 2014): the VAE built from the config's parts.

    Registries turn part names into parts. ``data_shape`` is one
    example's shape ((C, H, W) for images, (D,) for flat data, as ``Dataset.shape`` gives it),
    or a flat size D. The decoder gives ``likelihood.params_per_dim`` numbers per pixel. The
    initial weights are a function of the config alone (drawn from ``train.seed``; the global
    RNG is left as it was)."""
    m = config.model
    if m.latent_layers:
        raise ConfigError(
            "[model] latent_layers sets the layers of family 'hierarchical'; family 'vae' has "
            "one layer of latent_dim (set family = 'hierarchical', or drop latent_layers)"
        )
    arch = Architecture.for_data(
        data_shape,
        m.latent_dim,
        hidden=tuple(m.hidden),
        activation=m.activation,
        network=config.network.name,
        network_options=dict(config.network.options),
    )
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
        decoder = arch.decoder(getattr(likelihood, "params_per_dim", 1))
    return VAE(arch, encoder, decoder, likelihood, prior)
