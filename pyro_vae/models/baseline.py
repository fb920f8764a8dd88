"""The deterministic baseline of the conditional VAE: a network predicting the target part of
a row from its given part, scored under the same likelihood.

Sohn, Lee & Yan (2015) and Pyro's CVAE tutorial compare the CVAE with a network that maps
the conditioning input c straight to the likelihood's parameters for the target pixels t,
with no latent variable::

    t ~ p(t | f(c))        (site "x", the likelihood registry's head on the network's output)

so its conditional negative log-likelihood is exact: -log p(t | c) = -log p(t | f(c)). Written
as a Pyro program with an observed site and an empty guide, ``Trace_ELBO`` is that NLL and
``SVI`` fits it by maximum likelihood, as every model of the library is fitted.
"""

import itertools
import math
from typing import Callable, Optional

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.models.family import DATA_PLATE, OBSERVED
from pyro_vae.parts.networks import Architecture, mlp
from pyro_vae.registry import LIKELIHOODS

Split = Callable[[torch.Tensor], tuple]
_instances = itertools.count()


class Baseline(nn.Module):
    """``net`` c -> the likelihood's parameters for t; ``split`` rows -> (c, t) (a
    conditional family's own ``split``, so the baseline sees exactly the CVAE's task).
    """

    def __init__(self, net: nn.Module, likelihood: nn.Module, split: Split):
        super().__init__()
        self.net, self.likelihood, self.split = net, likelihood, split
        self.pyro_name = f"baseline{next(_instances)}"

    def model(self, x: torch.Tensor) -> None:
        """p(t | c) for the rows of x."""
        pyro.module(f"{self.pyro_name}.net", self.net)
        if any(True for _ in self.likelihood.parameters()):
            pyro.module(f"{self.pyro_name}.likelihood", self.likelihood)
        c, t = self.split(x)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample(OBSERVED, self.likelihood(self.net(c)), obs=t)

    def guide(self, x: torch.Tensor) -> None:
        """No latent variable: nothing to infer."""

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(t | c) per row (exact: the baseline has no latent variable)."""
        c, t = self.split(x)
        return self.likelihood(self.net(c)).log_prob(t)

    @torch.no_grad()
    def complete(self, x: torch.Tensor) -> torch.Tensor:
        """E[t | c]: the baseline's prediction of the target part of each row."""
        c, _ = self.split(x)
        return self.likelihood.mean(self.net(c))


def build_baseline(config: Config, cvae: nn.Module) -> Baseline:
    """A baseline for the task of the conditional family ``cvae`` (its ``split`` into given
    and target parts): an MLP of the config's widths (``[model] hidden``, ``activation``)
    from the given part to the config's likelihood over the target part, drawn from
    ``train.seed`` (the global RNG is left as it was)."""
    c, t = cvae.split(torch.zeros(1, cvae.row_dim))
    m = config.model
    arch = Architecture(t.shape[-1], m.latent_dim, tuple(m.hidden), m.activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed + 2)
        likelihood = LIKELIHOODS.build(
            config.likelihood.name, arch, config.likelihood.options
        )
        per_dim = getattr(likelihood, "params_per_dim", 1)
        net = mlp(c.shape[-1], tuple(m.hidden), t.shape[-1] * per_dim, m.activation)
    return Baseline(net, likelihood, cvae.split)


def fit_baseline(
    baseline: Baseline,
    x: torch.Tensor,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    on_epoch: Optional[Callable[[int, float], None]] = None,
) -> float:
    """Fit by maximum likelihood with ``SVI`` and ``Trace_ELBO`` (with no latent site the
    loss is -log p(t | c)), shuffled mini-batches drawn from ``seed``; returns the last
    epoch's mean NLL per row. ``on_epoch(epoch, nll)`` is called after each epoch (it may
    score held-out rows: the fit's random stream is its own generator)."""
    if epochs < 1 or batch_size < 1 or len(x) < 1:
        raise ConfigError(
            f"the baseline needs epochs >= 1, batch_size >= 1 and rows, got {epochs}, "
            f"{batch_size} and {len(x)} rows"
        )
    batch = min(batch_size, len(x))
    steps = len(x) // batch
    svi = SVI(baseline.model, baseline.guide, Adam({"lr": lr}), Trace_ELBO())
    generator = torch.Generator().manual_seed(seed)
    loss = math.nan
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for step in range(steps):
            total += svi.step(x[order[step * batch : (step + 1) * batch]])
        loss = total / (steps * batch)
        if on_epoch is not None:
            on_epoch(epoch, loss)
    return loss
