"""The labelled-batch schedule: every k-th batch labelled rows only, the rest unlabelled rows
each at most once, the labelled rows seen equally often, the same length every epoch, a
function of (seed, epoch); and ``fit`` steps on exactly these batches."""

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import models
from pyro_vae.data import from_splits
from pyro_vae.errors import ConfigError
from pyro_vae.models.family import Family
from pyro_vae.models.labelled_batches import HIDDEN, labelled_batches
from pyro_vae.models.semi_supervised import SemiSupervised
from pyro_vae.run.train import fit


def _column(rows: int, labelled: int) -> torch.Tensor:
    column = torch.full((rows,), HIDDEN)
    kept = torch.randperm(rows, generator=torch.Generator().manual_seed(1))[:labelled]
    column[kept] = kept % 10
    return column


def test_every_kth_batch_is_labelled_and_each_row_counted():
    column, batch, every = _column(1000, 30), 20, 4
    order = labelled_batches(column, seed=0, epoch=1, batch=batch, every=every)
    unlabelled_batches = (1000 - 30) // batch  # 48
    assert len(order) == (unlabelled_batches + unlabelled_batches // 3) * batch
    batches = order.view(-1, batch)
    labelled = column[batches] != HIDDEN
    expected = torch.tensor([(i + 1) % every == 0 for i in range(len(batches))])
    assert torch.equal(labelled.all(-1), expected)
    assert not labelled[~expected].any()
    unlabelled_rows = batches[~expected].flatten()
    assert len(unlabelled_rows.unique()) == len(unlabelled_rows)  # each at most once
    visits = torch.bincount(batches[expected].flatten(), minlength=1000)
    counts = visits[column != HIDDEN]
    assert counts.max() - counts.min() <= 1 and counts.sum() == 16 * batch
    same = labelled_batches(column, seed=0, epoch=1, batch=batch, every=every)
    other = labelled_batches(column, seed=0, epoch=2, batch=batch, every=every)
    assert torch.equal(order, same) and not torch.equal(order, other)
    assert len(other) == len(order)


def test_nothing_to_interleave_falls_back_to_a_shuffle_and_k_is_checked():
    everyone = torch.arange(100) % 10
    order = labelled_batches(everyone, seed=0, epoch=1, batch=10, every=3)
    assert torch.equal(order.sort().values, torch.arange(100))
    with pytest.raises(ConfigError, match="needs k >= 2, got 1"):
        labelled_batches(everyone, seed=0, epoch=1, batch=10, every=1)
    small = {"model.family": "semi_supervised", "model.labelled_every": 1}
    with pytest.raises(ConfigError, match="labelled_every must be 0"):
        models.build(cfg.load(None, small), 64)


SPLITS = (("train", 1000), ("test", 50))


def _labelled_share_per_step(monkeypatch) -> list:
    """Train M2 one epoch with labelled_every = 3 on 100 labels of 1,000 random binary rows;
    the share of labelled rows in each batch the model was stepped on."""
    config = cfg.load(
        None,
        {
            "model.family": "semi_supervised",
            "objective.name": "enum",
            "model.latent_dim": 2,
            "model.hidden": [8],
            "model.labels": 100,
            "model.labelled_every": 3,
            "train.epochs": 1,
            "train.batch_size": 50,
            "train.eval_rows": 10,
        },
    )
    g = torch.Generator().manual_seed(0)
    x = {s: (torch.rand(n, 16, generator=g) < 0.5).float().numpy() for s, n in SPLITS}
    y = {s: (torch.arange(n) % 10).numpy() for s, n in SPLITS}
    ds = from_splits("random-bits", x, y)
    m2 = models.build(config, ds.shape)
    shares, model = [], m2.model

    def recording(x, *args, **kwargs):
        if x.shape[-1] == m2.data_dim + 1:  # a training batch (scoring has no labels)
            shares.append(float((x[:, -1] != HIDDEN).float().mean()))
        return model(x, *args, **kwargs)

    monkeypatch.setattr(m2, "model", recording)
    fit(m2, ds, config)
    return shares  # TraceEnum_ELBO runs the model once per step


def test_fit_steps_on_the_labelled_batches(monkeypatch):
    shares = _labelled_share_per_step(monkeypatch)
    assert shares[2::3] == [1.0] * len(shares[2::3]) and len(shares) >= 6
    assert set(shares[0::3] + shares[1::3]) == {0.0}


def test_the_check_fails_when_fit_shuffles_labels_into_every_batch(monkeypatch):
    # the bug this schedule fixes: the loop's plain shuffle, a labelled row or so a batch
    monkeypatch.setattr(SemiSupervised, "epoch_order", Family.epoch_order)
    shares = _labelled_share_per_step(monkeypatch)
    with pytest.raises(AssertionError):
        assert shares[2::3] == [1.0] * len(shares[2::3]) and len(shares) >= 6
