"""The semi-supervised VAE "M2" of Kingma, Rezende, Mohamed & Welling (2014), with the class
summed out exactly by Pyro's parallel enumeration.

Generative model, per data point (plate ``"data"``)::

    y ~ p(y) = Categorical(1/K)           (site "y")
    z ~ p(z)                              (site "z", the prior registry)
    x ~ p(x | decoder([z, onehot(y)]))    (site "x", the network and likelihood registries)

Guide: y ~ q(y | x) (a classifier: the network's trunk and a linear layer to K logits) and
z ~ q(z | [x, onehot(y)]) (the guide registry). For an unlabelled x the guide's ``"y"`` site is
marked for parallel enumeration (``config_enumerate``), so ``TraceEnum_ELBO`` (objective
``enum``) computes::

    U(x) = sum_y q(y | x) [E_q(z|x,y)[log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y)]
                           - log q(y | x)]

with the sum over the K classes done exactly. A labelled (x, y) sits in the plate
``"labelled"`` with its own sites (``"y_labelled"`` observed, ``"z_labelled"``,
``"x_labelled"``) and contributes L(x, y), the ELBO with y given. The classifier is trained
on the labels too, as in Kingma et al.'s J^alpha = J + alpha E_labelled[-log q(y | x)]: an
observed site ``"y_aux"`` of the model, log q(y | x), scaled with ``poutine.scale`` by
alpha N / N_l per labelled point (alpha = ``[model] alpha`` times N, 0.1 N in the paper; N
training rows, N_l labelled ones), which is how Pyro's SS-VAE example adds it.

``fit`` trains on ``training_rows``: the images with their label appended as one more column
(-1 where hidden). ``[model] labels`` keeps N labels (or a fraction), balanced across classes
and drawn with ``train.seed``; ``records`` says which rows kept them (``labels.json``).

Which rows a batch holds is ``epoch_order``'s choice. By default all rows are shuffled
together, so a batch of B holds about B N_l / N labelled rows (1.25 at 100 labels of 8,000,
batch 100). ``[model] labelled_every = k`` instead makes every k-th batch one of labelled
rows only, drawn from a stream of them reshuffled whenever it runs out, and the others
unlabelled rows only (``labelled_batches.py``), as Pyro's SS-VAE example steps on its
labelled batches at a fixed interval. Each labelled visit carries its full terms (L(x, y)
and the auxiliary term), so a labelled row seen R times an epoch weighs R times what it
weighs in the shuffle; on labelled MNIST with 100 labels this kept q(y | x) near the
supervised classifier's error where the shuffle let the unlabelled term pull it to 50% and
more (benchmarks/README.md, "Labels").
"""

import itertools
from typing import Dict, Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import config_enumerate
from torch import nn

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.models.conditioned_parts import build_parts, join
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.models.labelled_batches import check_every, labelled_batches
from pyro_vae.models.labels import HIDDEN, keep_labels, split_labels, with_labels
from pyro_vae.registry import FAMILIES

CLASS = "y"
LATENT = "z"
AUXILIARY = "y_aux"
LABELLED_PLATE = "labelled"

_instances = itertools.count()
Weight = Union[float, torch.Tensor]


class SemiSupervised(Family):
    """M2 (see the module's docstring): ``classifier`` q(y | x) logits, ``guide`` q(z | [x, y]),
    ``decoder`` [z, y] -> likelihood parameters, ``likelihood``, ``prior`` p(z); ``alpha`` the
    classification weight per training row."""

    unconditional = False  # q(z | x, y): no q(z | x) of x alone for the diagnostics

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        classes: int,
        classifier: nn.Module,
        guide: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        prior: nn.Module,
        alpha: float = 0.1,
        labels: float = -1.0,
        seed: int = 0,
        labelled_every: int = 0,
    ):
        super().__init__()
        self.data_dim, self.classes = data_dim, classes
        self.classifier, self.encoder, self.decoder = classifier, guide, decoder
        self.likelihood, self.prior = likelihood, prior
        self.alpha, self.labels, self.seed = alpha, labels, seed
        self.labelled_every = labelled_every
        self.column: Optional[torch.Tensor] = (
            None  # the label column, once training_rows ran
        )
        self.register_buffer("class_logits", torch.zeros(classes))  # uniform p(y)
        self.aux_scale: Optional[float] = None  # alpha N / N_l, set by training_rows
        self.kept: Dict = {}
        self.pyro_name = f"ssvae{next(_instances)}"
        self.latent_sites = (
            LatentSite(CLASS, classes, discrete=True),
            LatentSite(LATENT, latent_dim),
        )

    # -- the seam's hooks -------------------------------------------------------------
    def check_data(self, x: torch.Tensor, where: str) -> None:
        self.likelihood.check_data(x, where)

    def training_rows(self, data) -> torch.Tensor:
        """The training images with a label column: the label for the rows ``[model]
        labels`` keeps (balanced, seeded), ``HIDDEN`` elsewhere; sets alpha N / N_l."""
        if data.train_labels is None:
            raise ConfigError(
                f"the semi_supervised family needs labels, and data set '{data.name}' has "
                f"none for its training rows; use a labelled data set (digits, mnist, an "
                f".npz with train_labels, an image folder with one sub-folder per class)"
            )
        column, self.kept = keep_labels(
            data.train_labels, self.classes, self.labels, self.seed
        )
        n_labelled = int((column != HIDDEN).sum())
        self.aux_scale = self.alpha * len(column) / max(n_labelled, 1)
        self.column = column
        return with_labels(data.train, column)

    def epoch_order(self, seed: int, epoch: int, n: int, batch: int) -> torch.Tensor:
        """A shuffle of all rows, or with ``labelled_every = k`` every k-th batch labelled
        rows only (``labelled_batches.py``)."""
        if not self.labelled_every or self.column is None:
            return super().epoch_order(seed, epoch, n, batch)
        return labelled_batches(self.column, seed, epoch, batch, self.labelled_every)

    def records(self) -> Dict[str, Dict]:
        """``labels.json``: which training rows kept their labels."""
        return {"labels": self.kept} if self.kept else {}

    def auxiliary_scale(self, n_labelled: int, n_rows: int) -> float:
        """The weight of log q(y | x) per labelled point: alpha N / N_l, with the training set's
        counts once ``training_rows`` ran, else the batch's."""
        if self.aux_scale is not None:
            return self.aux_scale
        return self.alpha * n_rows / max(n_labelled, 1)

    # -- the Pyro programs ------------------------------------------------------------
    def _split(self, x: torch.Tensor):
        if x.shape[-1] == self.data_dim + 1:
            return split_labels(x, self.data_dim)
        return x, None

    def _onehot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.classes).to(like.dtype)

    def model(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> None:
        """p(x, y, z); rows with a label column observe y where it is not ``HIDDEN``."""
        self.register_parts("decoder", "likelihood", "prior")
        x, y = self._split(x)
        hidden = None if y is None else y == HIDDEN
        if hidden is None or hidden.any():
            rows = x if hidden is None else x[hidden]
            with pyro.plate(DATA_PLATE, rows.shape[0]):
                self._generate(rows, None, "", kl_weight, reconstruction_weight)
        if hidden is not None and not hidden.all():
            self.register_parts("classifier")
            rows, labels = x[~hidden], y[~hidden]
            with pyro.plate(LABELLED_PLATE, rows.shape[0]):
                self._generate(
                    rows, labels, "_labelled", kl_weight, reconstruction_weight
                )
                scale = self.auxiliary_scale(rows.shape[0], x.shape[0])
                with poutine.scale(scale=scale):
                    pyro.sample(AUXILIARY, self.class_posterior(rows), obs=labels)

    def _generate(self, x, y, suffix, kl_weight, reconstruction_weight) -> None:
        y = pyro.sample(
            CLASS + suffix, dist.Categorical(logits=self.class_logits), obs=y
        )
        with poutine.scale(scale=kl_weight):
            z = pyro.sample(LATENT + suffix, self.prior())
        with poutine.scale(scale=reconstruction_weight):
            out = self.decoder(join(z, self._onehot(y, z)))
            pyro.sample(OBSERVED + suffix, self.likelihood(out), obs=x)

    def guide(
        self,
        x: torch.Tensor,
        kl_weight: Weight = 1.0,
        reconstruction_weight: Weight = 1.0,
    ) -> None:
        """q(y | x) q(z | x, y): y enumerated in parallel for unlabelled rows."""
        self.register_parts("classifier", "encoder")
        x, y = self._split(x)
        hidden = None if y is None else y == HIDDEN
        if hidden is None or hidden.any():
            rows = x if hidden is None else x[hidden]
            config_enumerate(self._unlabelled_guide, default="parallel")(
                rows, kl_weight
            )
        if hidden is not None and not hidden.all():
            rows, labels = x[~hidden], y[~hidden]
            with pyro.plate(LABELLED_PLATE, rows.shape[0]):
                with poutine.scale(scale=kl_weight):
                    q = self.encoder(join(rows, self._onehot(labels, rows)))
                    pyro.sample(LATENT + "_labelled", q)

    def _unlabelled_guide(self, x: torch.Tensor, kl_weight: Weight) -> None:
        with pyro.plate(DATA_PLATE, x.shape[0]):
            y = pyro.sample(CLASS, self.class_posterior(x))
            with poutine.scale(scale=kl_weight):
                pyro.sample(LATENT, self.encoder(join(x, self._onehot(y, x))))

    # -- what a user does with it -----------------------------------------------------
    def class_posterior(self, x: torch.Tensor) -> dist.Categorical:
        """q(y | x), the classifier."""
        return dist.Categorical(logits=self.classifier(x))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """E[x | y, z] for rows of z and class indices y."""
        return self.likelihood.mean(self.decoder(join(z, self._onehot(y, z))))

    @torch.no_grad()
    def style(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of q(z | x, y): an image's style given its class."""
        return self.encoder(join(x, self._onehot(y, x))).mean

    @torch.no_grad()
    def sample(self, num: int, label: Optional[int] = None) -> torch.Tensor:
        """E[x | y, z] for ``num`` draws z ~ p(z), y ~ p(y) (or y = ``label``)."""
        if label is not None and not 0 <= label < self.classes:
            raise ConfigError(
                f"--label must be a class between 0 and {self.classes - 1}, got {label}"
            )
        z = self.prior().sample((num,))
        if label is None:
            y = dist.Categorical(logits=self.class_logits).sample((num,))
        else:
            y = torch.full((num,), label, dtype=torch.long, device=z.device)
        return self.decode(z, y)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | y, z] for y ~ q(y | x) and z ~ q(z | x, y)."""
        y = self.class_posterior(x).sample()
        z = self.encoder(join(x, self._onehot(y, x))).sample()
        return self.decode(z, y)


class Classifier(nn.Module):
    """The network's encoder trunk and a linear layer to the class logits."""

    def __init__(self, trunk: nn.Module, features: int, classes: int):
        super().__init__()
        self.trunk, self.out = trunk, nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x))


@FAMILIES.register("semi_supervised")
def build(config: Config, data_shape: Union[int, Sequence[int]]) -> SemiSupervised:
    """The semi-supervised VAE M2 (Kingma et al. 2014); train it with ``--elbo
    enum_meanfield`` (y enumerated, KL(q(z | x, y) || p(z)) in closed form under each y where
    torch/Pyro registers it: infer/trace_enum_meanfield.py) or ``--elbo enum`` (the sampled
    z-term log p(z) - log q(z | x, y) in its place)."""
    m = config.model
    if m.classes < 2:
        raise ConfigError(f"[model] classes must be >= 2, got {m.classes}")
    if not m.alpha >= 0:
        raise ConfigError(f"[model] alpha must be >= 0, got {m.alpha}")
    check_every(m.labelled_every)
    parts = build_parts(config, data_shape, m.classes, "semi_supervised")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed + 1)
        trunk = parts.arch.encoder_trunk()
        classifier = Classifier(trunk, parts.arch.feature_dim, m.classes)
    return SemiSupervised(
        parts.arch.data_dim,
        m.latent_dim,
        m.classes,
        classifier,
        parts.guide,
        parts.decoder,
        parts.likelihood,
        parts.prior,
        alpha=m.alpha,
        labels=m.labels,
        seed=config.train.seed,
        labelled_every=m.labelled_every,
    )
