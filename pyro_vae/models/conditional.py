"""The conditional VAE of Sohn, Lee & Yan (2015): model a target t given a condition c.

``[model] condition`` says what c is:

* ``"quadrants"`` (the default): a part of the image. The row x splits into the given pixels
  c (``[model] given`` quadrants of each image: 1 = the top-left quadrant, 2 = the top half,
  3 = all but the bottom-right quadrant) and the target pixels t, the rest.
* ``"label"``: the one-hot class of the image (``[model] classes``), and t is the whole
  image; the rows are the image with its label appended as one more column (the family's
  ``training_rows`` and ``rows``), so a data set without labels is refused.

Per data point (plate ``"data"``)::

    z ~ p(z | c) = N(mu(c), diag sigma(c)^2)    (site "z", a Gaussian prior network on c)
    t ~ p(t | decoder([z, c]))                  (site "x", the likelihood over t alone)

Guide: z ~ q(z | t, c), Sohn et al.'s recognition network q(z | x, y): the guide registry on
the whole row (the image, whose pixels are [t, c] for quadrants; [image, onehot(c)] for a
label). Every estimator of the library then gives the conditional quantities through the
traces: the ELBO is the conditional ELBO of log p(t | c) (the negative of Pyro's CVAE
tutorial's figure), and importance sampling gives
log p(t | c) = log E_q[p(t, z | c) / q(z | t, c)].
"""

import itertools
import math
from typing import Optional, Sequence, Union

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.models.conditioned_parts import build_parts, join
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.models.labels import HIDDEN, check_classes, split_labels, with_labels
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import FAMILIES, GUIDES

LATENT = "z"
QUADRANTS, LABEL = "quadrants", "label"
CONDITIONS = (QUADRANTS, LABEL)
_instances = itertools.count()
Weight = Union[float, torch.Tensor]


def quadrant_mask(shape: Sequence[int], given: int) -> torch.Tensor:
    """A bool row of length prod(shape): True on the pixels of the first ``given`` quadrants
    (top-left, top-right, bottom-left) of every channel of a (C, H, W) image."""
    if len(shape) != 3:
        raise ConfigError(
            f"the conditional family's quadrants need images (C, H, W), got data of shape "
            f"{tuple(shape)}; use --set model.condition=label to condition on the label"
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
    """The CVAE (see the module's docstring): ``guide`` q(z | t, c), ``prior_net`` p(z | c),
    ``decoder`` [z, c] -> the likelihood's parameters for t. ``given_mask`` marks the given
    pixels (quadrants), or is None and ``classes`` > 0 (label)."""

    unconditional = (
        False  # p(z | c): the diagnostics of a prior of z alone do not apply
    )
    marginal = "log p(t | c)"  # the target given the condition

    def __init__(
        self,
        given_mask: Optional[torch.Tensor],
        latent_dim: int,
        guide: nn.Module,
        prior_net: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        classes: int = 0,
        data_dim: int = 0,
    ):
        super().__init__()
        self.condition = QUADRANTS if given_mask is not None else LABEL
        self.register_buffer("given_mask", given_mask)
        self.classes = classes
        self.data_dim = given_mask.numel() if given_mask is not None else data_dim
        # the width of the rows model and guide read: the label is one more column
        self.row_dim = self.data_dim + (self.condition == LABEL)
        # the pixels scored (bits per dimension divide by these)
        self.target_dim = self.data_dim - (
            0 if given_mask is None else int(given_mask.sum())
        )
        self.encoder, self.prior_net = guide, prior_net
        self.decoder, self.likelihood = decoder, likelihood
        self.pyro_name = f"cvae{next(_instances)}"
        self.latent_sites = (LatentSite(LATENT, latent_dim),)

    # -- rows: (condition c, target t) ------------------------------------------------
    def split(self, x: torch.Tensor):
        """(condition c, target t) of rows x: the given and the target pixels, or the
        one-hot label and the image."""
        if self.given_mask is not None:
            return x[..., self.given_mask], x[..., ~self.given_mask]
        if x.shape[-1] != self.row_dim:
            raise ConfigError(
                f"the label-conditioned family reads rows of {self.data_dim} pixels and "
                f"the label ({self.row_dim} columns), got {x.shape[-1]}; pass rows from "
                f"Conditional.rows(data, split)"
            )
        image, label = split_labels(x, self.data_dim)
        return self.onehot(label, x), image

    def onehot(self, label: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        check_classes(label, self.classes)
        return F.one_hot(label, self.classes).to(like.dtype)

    def guide_input(self, x: torch.Tensor) -> torch.Tensor:
        """What q(z | t, c) reads: the row itself (its pixels are t and c), or
        [image, onehot(label)]."""
        if self.given_mask is not None:
            return x
        c, t = self.split(x)
        return join(t, c)

    def rows(self, data, split: str) -> torch.Tensor:
        """The rows of a split: its images, with the label column for a label condition."""
        x = data.split(split)
        if self.condition == QUADRANTS:
            return x
        labels = getattr(data, f"{split}_labels", None)
        if labels is None:
            raise ConfigError(
                f"the conditional family with condition 'label' needs labels, and data set "
                f"{data.name!r} has none for its {split} rows; use a labelled data set "
                f"(digits, mnist, an .npz with labels, an image folder per class) or "
                f"--set model.condition=quadrants"
            )
        unlabelled = int((labels == HIDDEN).sum())
        if unlabelled:
            raise ConfigError(
                f"the conditional family with condition 'label' needs a label for every "
                f"{split} row, and data set {data.name} marks {unlabelled} of them -1 "
                f"(unlabelled); drop those rows, or train them with --family "
                f"semi_supervised, which sums an unknown label out"
            )
        return with_labels(x, labels)

    def training_rows(self, data) -> torch.Tensor:
        return self.rows(data, "train")

    def check_data(self, x: torch.Tensor, where: str) -> None:
        if self.given_mask is not None:
            self.likelihood.check_data(self.split(x)[1], where)
        else:
            self.likelihood.check_data(x[..., : self.data_dim], where)

    # -- the Pyro programs ------------------------------------------------------------
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
        """q(z | t, c)."""
        self.register_parts("encoder")
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                pyro.sample(LATENT, self.encoder(self.guide_input(x)))

    # -- what a user does with it -----------------------------------------------------
    @torch.no_grad()
    def complete(self, x: torch.Tensor, num: int = 1) -> torch.Tensor:
        """``num`` completions of each row: E[t | z, c] for z ~ p(z | c), with the given
        pixels kept (quadrants); shape (num, N, D)."""
        c, _ = self.split(x)
        z = self.prior_net(c).sample((num,))
        mean = self.likelihood.mean(self.decoder(join(z, c)))
        if self.given_mask is None:
            return mean
        out = x.expand(num, *x.shape).clone()
        out[..., ~self.given_mask] = mean
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The target decoded from z ~ q(z | t, c) (the given pixels kept)."""
        c, _ = self.split(x)
        mean = self.likelihood.mean(
            self.decoder(join(self.encoder(self.guide_input(x)).sample(), c))
        )
        if self.given_mask is None:
            return mean
        out = x.clone()
        out[..., ~self.given_mask] = mean
        return out

    @torch.no_grad()
    def decode_noise(self, eps: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """E[x | z, c] for z = mu(c) + sigma(c) eps: the same standard-normal noise eps
        gives each class's draw (the class figure's rows; label condition)."""
        c = self.onehot(label, eps)
        prior = self.prior_net(c).base_dist
        z = prior.loc + prior.scale * eps
        return self.likelihood.mean(self.decoder(join(z, c)))

    @torch.no_grad()
    def sample(self, num: int, label: Optional[int] = None) -> torch.Tensor:
        """Label condition: E[x | z, y] for z ~ p(z | y), y = ``label`` (or uniform over the
        classes). Quadrants: refused (a CVAE completes given pixels, ``complete``)."""
        if self.given_mask is not None:
            raise ConfigError(
                "the conditional family with quadrants completes given pixels; see "
                "completions.png (Conditional.complete) instead of samples from p(z)"
            )
        if label is not None and not 0 <= label < self.classes:
            raise ConfigError(
                f"--label must be a class between 0 and {self.classes - 1}, got {label}"
            )
        device = next(self.parameters()).device
        if label is None:
            y = torch.randint(self.classes, (num,), device=device)
        else:
            y = torch.full((num,), label, dtype=torch.long, device=device)
        eps = torch.randn(num, self.latent_sites[0].size, device=device)
        return self.decode_noise(eps, y)


@FAMILIES.register("conditional")
def build(config: Config, data_shape: Union[int, Sequence[int]]) -> Conditional:
    """The conditional VAE (Sohn et al. 2015) given quadrants of images or their label."""
    shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(data_shape)
    m = config.model
    if m.condition not in CONDITIONS:
        raise ConfigError(
            f"[model] condition must be one of {', '.join(CONDITIONS)}, got "
            f"'{m.condition}'"
        )
    if m.condition == QUADRANTS:
        mask: Optional[torch.Tensor] = quadrant_mask(shape, m.given)
        given, target = int(mask.sum()), int((~mask).sum())
        parts = build_parts(config, target, given, "conditional")
    else:
        if m.classes < 2:
            raise ConfigError(f"[model] classes must be >= 2, got {m.classes}")
        mask, given = None, m.classes
        parts = build_parts(config, shape, given, "conditional")
    prior_arch = Architecture(given, m.latent_dim, tuple(m.hidden), m.activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed + 1)
        prior_net: nn.Module = GUIDES.build("diagonal", prior_arch, {})
    return Conditional(
        mask,
        m.latent_dim,
        parts.guide,
        prior_net,
        parts.decoder,
        parts.likelihood,
        classes=m.classes,
        data_dim=math.prod(shape),
    )
