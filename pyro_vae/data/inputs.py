"""What a user hands over from Python, as a NumPy array: arrays, torch tensors, nested lists.

Torch tensors of any float dtype are accepted, including those NumPy has no type for
(bfloat16 becomes float32 exactly: every bfloat16 is a float32); a sparse tensor is made
dense; a tensor on a GPU is copied to the CPU. A meta tensor (shapes without values) and a
ragged nested list (rows of different lengths) are refused with one ``DataError`` line.
What the array holds (dtype, shape, values) is checked later, by ``dataset.as_rows``.
"""

from typing import Any

import numpy as np
import torch

from pyro_vae.errors import DataError

# torch float dtypes that NumPy has no type for, and the NumPy-readable dtype holding them
WIDER = {torch.bfloat16: torch.float32}


def as_array(value: Any, where: str) -> np.ndarray:
    """``value`` (a NumPy array, a torch tensor, or nested lists of numbers) as an ndarray;
    ``where`` names it in the message of a refusal."""
    if isinstance(value, np.ndarray):
        return value
    if torch.is_tensor(value):
        if value.is_meta:
            raise DataError(
                f"{where} is a meta tensor, which holds no values (only a shape); pass a "
                f"tensor with data"
            )
        value = value.detach()
        if value.layout != torch.strided:
            value = value.to_dense()
        value = value.to(WIDER.get(value.dtype, value.dtype))
        return value.cpu().numpy()
    try:
        return np.asarray(value)
    except ValueError as err:
        if "inhomogeneous" in str(err):
            raise DataError(
                f"{where} is a ragged list (rows of different lengths); pass equally long "
                f"rows, or a NumPy array of shape (N, D)"
            ) from None
        raise DataError(
            f"{where} cannot be read as an array of numbers: {err}"
        ) from None
