"""Labels of a data set's examples: one whole number >= 0 per example, or ``UNLABELLED`` (-1)
for a training example without a label.

Labels only colour figures (the latent scatter), but a label set that does not fit its
examples is a sign of a mix-up in the user's file, so it is refused rather than drawn:
labels must be a 1-d array of integers, or of floats that are whole numbers (not NaN, not
fractional), none negative, exactly one per example of their split. The one exception is -1
in the training split: it marks an example whose label is unknown, as semi-supervised data
holds a few labelled images among many unlabelled ones (the ``semi_supervised`` family
trains on both; ``models/labels.py``). Validation and test labels must all be known: the test
error is scored on them.
"""

from typing import Any, Optional

import numpy as np
import torch

from pyro_vae.data.inputs import as_array
from pyro_vae.errors import DataError

EXPECTED = (
    "labels are one whole number >= 0 per example, shape (N,); in 'train' -1 marks an "
    "unlabelled example"
)
UNLABELLED = -1


def check_labels(values: Any, examples: int, split: str, where: str) -> torch.Tensor:
    """``values`` as a long tensor of shape (``examples``,), or a ``DataError`` naming
    ``where`` (the file and member) and what was found."""
    array = as_array(values, where)

    def refuse(found: str) -> DataError:
        return DataError(f"{where} {found}; {EXPECTED}")

    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise refuse(f"holds {array.dtype} values")
    if array.ndim != 1:
        raise refuse(f"has shape {tuple(array.shape)}")
    if len(array) != examples:
        raise refuse(
            f"holds {len(array)} labels for the {examples} examples of '{split}'"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise refuse("holds NaN or infinite values")
        fractional = array[array != np.round(array)]
        if len(fractional):
            raise refuse(f"holds fractional values such as {fractional[0]:g}")
    lowest = UNLABELLED if split == "train" else 0
    if len(array) and array.min() < lowest:
        raise refuse(f"holds negative values such as {array[array < lowest][0]:g}")
    return torch.as_tensor(array.astype(np.int64))


def split_labels(
    values: Optional[Any], rows: Optional[torch.Tensor], split: str, where: str
) -> Optional[torch.Tensor]:
    """:func:`check_labels` for a split that may have no labels (``None``)."""
    if values is None:
        return None
    return check_labels(values, 0 if rows is None else len(rows), split, where)
