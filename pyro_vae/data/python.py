"""Arrays given from Python (``Model.fit(x)``): a :class:`Dataset` from ``x`` (and ``test``),
with labels checked against the rows they label.

Without ``test``, the rows of ``x`` (and of ``labels``) are split by the config's seeded split
(``data.test_fraction``, ``data.valid_fraction``, ``data.split_seed``); ``x`` may be anything
:func:`inputs.as_array` reads (NumPy, any torch tensor, nested lists).
"""

from typing import Any, Optional

import numpy as np

from pyro_vae.config import DataConfig
from pyro_vae.data.dataset import Dataset, from_splits, seeded_split
from pyro_vae.data.inputs import as_array
from pyro_vae.data.labels import check_labels

NAME = "arrays given from Python"


def from_arrays(
    x: Any,
    test: Optional[Any],
    labels: Optional[Any],
    test_labels: Optional[Any],
    config: DataConfig,
) -> Dataset:
    """A :class:`Dataset` of ``x`` (train) and ``test``, or of the seeded split of ``x``."""
    splits = {"train": x, "test": test}
    split_labels = {"train": labels, "test": test_labels}
    if test is None:
        x = as_array(x, "x")
        n = len(x) if x.ndim else 0
        if labels is not None:
            labels = check_labels(labels, n, "x", "labels")
        picks = {s: np.sort(i) for s, i in seeded_split(n, config).items() if len(i)}
        splits = {s: x[i] for s, i in picks.items()}
        split_labels = {
            s: None if labels is None else labels[i] for s, i in picks.items()
        }
    return from_splits(NAME, splits, split_labels)
