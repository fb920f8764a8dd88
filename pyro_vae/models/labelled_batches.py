"""The order of an epoch's rows for semi-supervised training with few labels: batches of
unlabelled rows, and every k-th batch one of labelled rows only.

With N_l labels among N rows, a shuffle of all rows puts about B N_l / N labelled rows into a
batch of B (1.25 at 100 labels of 8,000, batch 100; a quarter of the batches hold none). Each
step's gradient is then almost all the unlabelled term U(x) of Kingma et al. (2014), whose
sum over the classes pulls q(y | x) towards whatever clusters serve the ELBO, and the few
labelled rows do not hold y to the classes (measured on labelled MNIST: benchmarks/README.md,
"Labels"). Pyro's SS-VAE example steps on batches of labelled rows at a fixed interval
instead; here the labelled rows are a stream of their own, reshuffled each time it runs out,
so that with ``[model] labelled_every = k`` every k-th batch is labelled and each labelled
row is seen about (n_u / B) / (k - 1) * B / N_l times per epoch (n_u unlabelled rows).

``labelled_batches(column, seed, epoch, batch, every)`` gives the indices: n_u // B
unlabelled batches (each unlabelled row at most once, the remainder dropped, as ``fit``
does), with a labelled batch after every k - 1 of them. The count of rows is the same every
epoch, and the order is a function of (seed, epoch) only.
"""

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.models.labels import HIDDEN


def check_every(every: int) -> None:
    """Refuse a ``[model] labelled_every`` that is neither 0 (off) nor at least 2."""
    if every < 0 or every == 1:
        raise ConfigError(
            f"[model] labelled_every must be 0 (labelled and unlabelled rows shuffled "
            f"together) or >= 2 (every k-th batch labelled rows only), got {every}"
        )


def labelled_batches(
    column: torch.Tensor, seed: int, epoch: int, batch: int, every: int
) -> torch.Tensor:
    """Row indices for one epoch: unlabelled batches with a labelled batch after every
    ``every - 1`` of them (``column``: the label column, ``HIDDEN`` where hidden)."""
    if every < 2:
        raise ConfigError(f"a labelled batch every k batches needs k >= 2, got {every}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    hidden = column.cpu() == HIDDEN
    unlabelled, labelled = hidden.nonzero().flatten(), (~hidden).nonzero().flatten()
    if not len(labelled) or len(unlabelled) < batch * (every - 1):
        # nothing to interleave: every row labelled, none, or too few unlabelled batches
        return torch.randperm(len(column), generator=generator)
    unlabelled = unlabelled[torch.randperm(len(unlabelled), generator=generator)]
    unlabelled_batches = len(unlabelled) // batch
    want = unlabelled_batches // (every - 1) * batch  # labelled rows this epoch
    stream = [
        labelled[torch.randperm(len(labelled), generator=generator)]
        for _ in range(-(-want // max(len(labelled), 1)))
    ]
    stream = torch.cat(stream)[:want] if stream else labelled[:0]
    pieces, taken = [], 0
    for i in range(unlabelled_batches):
        pieces.append(unlabelled[i * batch : (i + 1) * batch])
        if (i + 1) % (every - 1) == 0:
            pieces.append(stream[taken : taken + batch])
            taken += batch
    return torch.cat(pieces) if pieces else unlabelled[:0]
