"""The per-epoch evaluation and its budget: which rows score the ELBO, and at which epochs.

``fit`` reports, after an epoch, the ELBO and its terms on the test set, the ELBO on the
validation set (which picks ``best.pt`` and drives early stopping) and on a slice of the
training set. Scoring every row of those splits after every epoch cost 14% of a binarized
MNIST epoch and 70% of an epoch on a 2,000-row data set, so two settings bound it:

* ``train.eval_rows`` (default 1000): each split is scored on a fixed subset of this many
  rows, drawn once from ``train.seed`` (0: every row). The same rows every epoch, so the
  change from one epoch to the next is measured on paired data, with far less noise than the
  level itself.
* ``train.eval_every`` (default 0, auto): the epochs between evaluations; the last epoch is
  always evaluated, and so is the first. Auto picks the smallest interval at which the rows
  scored stay within :data:`EVAL_SHARE` of the rows trained on: an ELBO pass over a row (forward only, no
  gradients, one large batch) costs a fraction of a training step's forward and backward
  pass over it, which keeps evaluation near or under 5% of the training time (measured
  figures: README).

Where the likelihood puts a probability mass on each pixel value, the row also carries the
ELBO in bits per dimension (``estimate/bits.py``).
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from pyro_vae.config import Config
from pyro_vae.estimate.bits import bits_per_dim, counts_bits
from pyro_vae.estimate.diagnostics import elbo_terms
from pyro_vae.models.vae import VAE
from pyro_vae.process import forked_rng

# rows scored per evaluation, at most, per row trained since the last one (eval_every = 0)
EVAL_SHARE = 0.1
SUBSET_SEED = 7_919  # offset of the subsets' seed from train.seed


@dataclass
class EpochEvaluation:
    """The rows scored after an epoch (fixed subsets of each split), and how often."""

    test: torch.Tensor
    train: torch.Tensor
    valid: Optional[torch.Tensor]
    every: int  # epochs between evaluations (the last epoch is always evaluated)
    bits_dims: Optional[
        int
    ]  # data dimensions for bits/dim, None where they do not apply

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether (1-based) ``epoch`` is scored: the first (where a curve starts), every
        ``every`` epochs, and the last."""
        return epoch == 1 or epoch % self.every == 0 or epoch == last_epoch

    def rows(self) -> int:
        """Rows scored per evaluation."""
        valid = 0 if self.valid is None else len(self.valid)
        return len(self.test) + len(self.train) + valid

    @torch.no_grad()
    def scores(self, vae: VAE, seed: int) -> Dict[str, float]:
        """``train_elbo``, ``test_elbo``, its ``kl`` and ``reconstruction``, ``valid_elbo``
        (with a validation split), and ``test_bits_per_dim`` / ``valid_bits_per_dim`` where
        bits apply; nats per data point. The draws of z come from ``seed`` in a forked random
        stream, so evaluating (or not) leaves the training run's draws as they were."""
        with forked_rng(self.test):
            torch.manual_seed(seed)
            return self._scores(vae)

    def _scores(self, vae: VAE) -> Dict[str, float]:
        test = elbo_terms(vae, self.test)
        row = {
            "train_elbo": elbo_terms(vae, self.train)["elbo"].mean().item(),
            "test_elbo": test["elbo"].mean().item(),
            "kl": test["kl"].mean().item(),
            "reconstruction": test["reconstruction"].mean().item(),
        }
        if self.valid is not None:
            row["valid_elbo"] = elbo_terms(vae, self.valid)["elbo"].mean().item()
        if self.bits_dims is not None:
            for split in ("test", "valid"):
                if f"{split}_elbo" in row:
                    row[f"{split}_bits_per_dim"] = bits_per_dim(
                        row[f"{split}_elbo"], self.bits_dims
                    )
        return row


def subset(x: torch.Tensor, rows: int, seed: int) -> torch.Tensor:
    """``rows`` rows of ``x`` drawn without replacement by ``seed`` (in their order in ``x``);
    all of ``x`` when ``rows`` is 0 or not smaller than it."""
    if rows == 0 or rows >= len(x):
        return x
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:rows]
    return x[pick.sort().values.to(x.device)]


def auto_interval(scored: int, trained: int) -> int:
    """The smallest number of epochs after which ``trained`` rows per epoch add up to at
    least ``scored / EVAL_SHARE``: evaluation then scores at most ``EVAL_SHARE`` rows per
    row trained."""
    return max(1, math.ceil(scored / (EVAL_SHARE * max(trained, 1))))


def plan(
    vae: VAE,
    config: Config,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    valid_x: Optional[torch.Tensor],
    trained_rows: int,
) -> EpochEvaluation:
    """The evaluation of a run: subsets of ``train.eval_rows`` rows of each split (seeded by
    ``train.seed``), scored every ``train.eval_every`` epochs (0: :func:`auto_interval` for
    ``trained_rows`` rows trained per epoch)."""
    t = config.train
    seed = t.seed + SUBSET_SEED
    plan = EpochEvaluation(
        test=subset(test_x, t.eval_rows, seed),
        train=subset(train_x, t.eval_rows, seed + 1).to(test_x.device),
        valid=None if valid_x is None else subset(valid_x, t.eval_rows, seed + 2),
        every=1,
        bits_dims=(
            getattr(vae, "target_dim", train_x.shape[-1])
            if counts_bits(getattr(vae, "likelihood", None))
            else None
        ),
    )
    plan.every = t.eval_every or auto_interval(plan.rows(), trained_rows)
    return plan
