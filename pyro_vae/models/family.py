"""The model-family seam: what every family declares, and ``build``, which picks one by name.

A family is an ``nn.Module`` owning its networks, with two Pyro programs, ``model(x, ...)`` and
``guide(x, ...)``, whose sample sites all sit in the data plate ``"data"`` (one importance
weight per data point) and whose observed site is ``"x"``. It declares its latent sites
(``latent_sites``: name, size, whether discrete), so that estimators, objectives and figures
find them through traces and these declarations, never through an ``isinstance`` on a family.

A new family is one module in this wing: a ``Family`` subclass and a factory
``factory(config, data_shape)`` registered in ``registry.FAMILIES`` under the name that
``[model] family`` gives.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

import pyro
import torch
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_vae.config import Config, check_size
from pyro_vae.errors import ConfigError
from pyro_vae.registry import FAMILIES

OBSERVED = "x"  # the observed site of every family
DATA_PLATE = "data"  # the plate every sample site sits in


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site of a family: its name, its size (event size of a continuous site,
    number of values of a discrete one) and whether it is discrete."""

    name: str
    size: int
    discrete: bool = False


class Family(nn.Module):
    """Base class of the model families (see the module's docstring). ``fit`` calls
    ``model(x, kl_weight, reconstruction_weight)`` and ``guide`` with the same arguments, and
    the three hooks below."""

    latent_sites: Tuple[LatentSite, ...] = ()
    # q(z | x) and p(z) are the ``encoder`` and ``prior`` parts, of x alone: the diagnostics
    # that read them (KL per dimension, active units, mutual information) apply
    unconditional: bool = True
    # what the likelihood scores, as ``evaluate`` prints it (a conditional family: log p(t | c))
    marginal: str = "log p(x)"

    def model(self, x, *args, **kwargs):
        raise NotImplementedError

    def guide(self, x, *args, **kwargs):
        raise NotImplementedError

    def check_data(self, x, where: str) -> None:
        """Refuse data that the family's likelihood cannot score (``where`` names the split
        in the message); every value is accepted unless a family says otherwise."""

    def release_params(self) -> None:
        """Forget the family's entries in Pyro's param store, so that ``pyro.module``
        registers its current tensors (after ``.to(device)`` or loading a checkpoint). The
        entries are those :meth:`register_parts` made, named ``"{pyro_name}.{part}..."``; a
        family without a ``pyro_name`` has none.
        """
        prefix = getattr(self, "pyro_name", None)
        if prefix is None:
            return
        store = pyro.get_param_store()
        for name in [n for n in store.keys() if n.startswith(f"{prefix}.")]:
            del store[name]

    def register_parts(self, *names: str) -> None:
        """``pyro.module`` for each named part that has parameters, under the name
        ``"{pyro_name}.{name}"`` (call it at the top of ``model`` and ``guide``)."""
        for name in names:
            part = getattr(self, name)
            if any(True for _ in part.parameters()):
                pyro.module(f"{self.pyro_name}.{name}", part)

    def kl_is_analytic(self, x) -> bool:
        """Whether ``TraceMeanField_ELBO`` computes every KL term in closed form."""
        return False

    def training_rows(self, data) -> torch.Tensor:
        """The rows ``fit`` shuffles and steps on: ``data.train`` unless a family appends
        columns (the semi-supervised family appends each row's label, -1 where hidden).
        """
        return data.train

    def rows(self, data, split: str) -> torch.Tensor:
        """The rows model and guide read for a split (``"train"``, ``"valid"``, ``"test"``)
        when it is scored: ``data.split(split)`` unless a family appends columns (the
        label-conditioned CVAE appends each row's label)."""
        return data.split(split)

    def records(self) -> Dict[str, Dict]:
        """JSON records the run directory keeps beside the checkpoint (``NAME.json``): for
        the semi-supervised family, which rows kept their labels."""
        return {}

    def epoch_order(self, seed: int, epoch: int, n: int, batch: int) -> torch.Tensor:
        """The indices of the ``n`` training rows in the order an epoch steps on them, in
        slices of ``batch`` rows (a remainder is dropped): a seeded shuffle, a function of
        (seed, epoch) only. Every epoch must give the same number of rows; a family may
        arrange its batches (the semi-supervised family's labelled batches)."""
        return shuffled(seed, epoch, n)


def shuffled(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of ``n`` rows for an epoch, a function of (seed, epoch) only."""
    return torch.randperm(
        n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    )


def build(config: Config, data_shape: Union[int, Sequence[int]]) -> Family:
    """The family that ``config.model.family`` names, built from the config's parts for data
    of one example's shape ``data_shape`` ((C, H, W), (D,), or a flat size D), after the
    memory estimate of its sizes (``config.sizes.check_size``) has allowed it."""
    check_size(config, data_shape)
    return FAMILIES.get(config.model.family)(config, data_shape)


def latent_names(trace: Trace, skip: Sequence[str] = ()) -> List[str]:
    """The latent (unobserved, non-subsample) sample sites of a trace, in trace order, less
    the names in ``skip``."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and name not in skip
    ]


def latent_site(trace: Trace, where: str, skip: Sequence[str] = ()) -> str:
    """The name of the single continuous latent site of a trace (a guide's, or a model's with
    ``skip`` naming its uncondition-ed observed site); ``where`` names the estimator that
    needs one, for the error a family with another structure gets."""
    names = latent_names(trace, skip)
    if len(names) != 1 or trace.nodes[names[0]]["fn"].has_enumerate_support:
        raise ConfigError(
            f"{where} needs a model family with one continuous latent site; this one has "
            f"{', '.join(names) or 'none'}"
        )
    return names[0]
