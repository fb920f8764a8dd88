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
    with pytest.raises(
        ConfigError, match="more labels than the 200 labelled training rows"
    ):
        keep_labels(labels, 10, 210, seed=0)
    with pytest.raises(ConfigError, match="needs 3 rows of class 9"):
        few_nines = labels.clone()
        few_nines[(labels == 9).nonzero()[2:]] = 0
        keep_labels(few_nines, 10, 30, seed=0)
    with pytest.raises(ConfigError, match="whole number of labels"):
        keep_labels(labels, 10, 2.5, seed=0)
    with pytest.raises(ConfigError, match=r"labels must lie in 0..4"):
        keep_labels(labels, 5, 10, seed=0)


def test_rows_the_data_leaves_unlabelled_stay_unlabelled():
    labels = torch.arange(300) % 10
    labels[100:] = HIDDEN  # 100 labelled rows among 300
    column, record = keep_labels(labels, 10, 20, seed=1)
    kept = torch.tensor(record["kept_rows"])
    assert len(kept) == 20 and (kept < 100).all() and record["per_class"] == [2] * 10
    assert record["labelled_rows"] == 100 and record["rows"] == 300
    assert (column[100:] == HIDDEN).all()
    everything, record = keep_labels(labels, 10, -1, seed=0)
    assert torch.equal(everything, labels) and record["count"] == 100
    assert (
        keep_labels(labels, 10, 0.5, seed=0)[1]["count"] == 50
    )  # of the labelled rows
    with pytest.raises(ConfigError, match="more labels than the 100 labelled training"):
        keep_labels(labels, 10, 101, seed=0)
    with pytest.raises(ConfigError, match="every one of the 300 training labels is -1"):
        keep_labels(torch.full((300,), HIDDEN), 10, 20, seed=0)


def test_a_fully_labelled_set_keeps_the_same_rows_as_before_unlabelled_rows_were_allowed():
    # the unlabelled rows must not move the seeded draw of a fully labelled data set
    labels = torch.arange(200) % 10
    column, _ = keep_labels(labels, 10, 30, seed=3)
    generator = torch.Generator().manual_seed(3)
    expected = []
    for c in range(10):
        rows = (labels == c).nonzero().flatten()
        expected.append(rows[torch.randperm(len(rows), generator=generator)[:3]])
    assert torch.equal(
        (column != HIDDEN).nonzero().flatten(), torch.cat(expected).sort().values
    )
