"""Which rows keep their labels: N (or a fraction), balanced over the classes, seeded, with
one-line errors for what cannot be kept."""

import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.models.labels import HIDDEN, keep_labels


def test_kept_labels_are_balanced_seeded_and_recorded():
    labels = torch.arange(200) % 10
    column, record = keep_labels(labels, 10, 30, seed=3)
    assert (column != HIDDEN).sum() == 30 and record["per_class"] == [3] * 10
    assert torch.equal(column[record["kept_rows"]], labels[record["kept_rows"]])
    assert torch.equal(keep_labels(labels, 10, 30, seed=3)[0], column)
    assert not torch.equal(keep_labels(labels, 10, 30, seed=4)[0], column)
    assert keep_labels(labels, 10, 0.5, seed=0)[1]["count"] == 100
    assert keep_labels(labels, 10, -1, seed=0)[1]["count"] == 200
    with pytest.raises(ConfigError, match="more labels than the 200 training rows"):
        keep_labels(labels, 10, 210, seed=0)
    with pytest.raises(ConfigError, match="needs 3 rows of class 9"):
        few_nines = labels.clone()
        few_nines[(labels == 9).nonzero()[2:]] = 0
        keep_labels(few_nines, 10, 30, seed=0)
    with pytest.raises(ConfigError, match="whole number of labels"):
        keep_labels(labels, 10, 2.5, seed=0)
    with pytest.raises(ConfigError, match=r"labels must lie in 0..4"):
        keep_labels(labels, 5, 10, seed=0)
