"""Data sets: train/test (and optional validation) rows, flattened, float32 in [0, 1].

Every data set is one function registered in :data:`pyro_vae.registry.DATASETS` that turns a
:class:`~pyro_vae.config.DataConfig` into a :class:`Dataset`:

* ``digits``, ``binarized-mnist``, ``mnist``: the built-in sets (:mod:`pyro_vae.data_mnist`);
* ``array`` (a ``.npy``/``.npz`` file) and ``images`` (a folder of PNG/JPEG files): the user's
  own data (:mod:`pyro_vae.data_user`).

Whatever the source, :func:`as_rows` is the one gate user data passes: it accepts arrays of
shape (N, D), (N, C, H, W), (N, H, W) or (N, H, W, C) with C in {1, 3}, values in [0, 1] or
integer grey levels 0-255, and refuses anything else with a message naming what it found. Rows
stay flat (N, D); :attr:`Dataset.shape` keeps one example's shape before flattening.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from pyro_vae.config import DEFAULT_PARTS, FROM_PYTHON, DataConfig, resolve_binarize
from pyro_vae.data.inputs import as_array
from pyro_vae.data.labels import split_labels
from pyro_vae.errors import DataError
from pyro_vae.registry import DATASETS

CHANNELS = (1, 3)
ACCEPTED = (
    "(N, D) rows, (N, C, H, W) or (N, H, W, C) images with C = 1 or 3, or (N, H, W) grey "
    "images, with values in [0, 1] or integer grey levels 0-255"
)


@dataclass
class Dataset:
    """Train/test (and optional validation) rows, flattened, float32 in [0, 1].

    ``image_shape`` is the (H, W) an example is drawn as; ``example_shape``, when given, is one
    example's full shape before flattening ((C, H, W) for images, (D,) for flat data);
    ``label_names``, when given, names label k (an image folder's sub-folders).
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    image_shape: Tuple[int, int]
    valid: Optional[torch.Tensor] = None
    train_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None
    example_shape: Optional[Tuple[int, ...]] = None
    label_names: Optional[Tuple[str, ...]] = None

    @property
    def data_dim(self) -> int:
        return self.train.shape[1]

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape of one example before flattening: (C, H, W) for images, (D,) otherwise.
        Rows are stored flat (length ``data_dim``); a convolutional network reshapes them.
        """
        if self.example_shape is not None:
            return tuple(self.example_shape)
        if len(self.image_shape) == 2 and math.prod(self.image_shape) == self.data_dim:
            return (1, *self.image_shape)
        return (self.data_dim,)

    def split(self, name: str) -> torch.Tensor:
        value = (
            getattr(self, name, None) if name in ("train", "valid", "test") else None
        )
        if value is None:
            have = [
                s for s in ("train", "valid", "test") if getattr(self, s) is not None
            ]
            raise DataError(
                f"data set '{self.name}' has no split '{name}'; its splits: {', '.join(have)}"
            )
        return value


def load(config: DataConfig) -> Dataset:
    """Load the data set that ``config`` names (a :data:`DATASETS` entry); binarize grey
    images at 0.5 when ``config.binarize`` says so (a config built by ``config.from_dict``
    has it resolved; an unresolved "auto" here follows the default likelihood)."""
    if config.dataset == FROM_PYTHON:
        raise DataError(
            "this run was trained on arrays given from Python, which are not stored with it; "
            "evaluate it from Python (pyro_vae.load_run(RUN_DIR).evaluate(x)) or retrain it "
            "with --dataset array --data-path FILE"
        )
    data = DATASETS.get(config.dataset)(config)
    if resolve_binarize(config.binarize, DEFAULT_PARTS["likelihood"]):
        for split in ("train", "valid", "test"):
            images = getattr(data, split)
            if images is not None:
                setattr(data, split, (images > 0.5).float())
    return data


def example_shape(shape: Tuple[int, ...], where: str) -> Tuple[Tuple[int, ...], bool]:
    """One example's (C, H, W) or (D,) shape from an array's full ``shape``, and whether the
    array is channels-last (N, H, W, C) and must be transposed."""
    found = f"{where} has shape {tuple(shape)}"
    if len(shape) == 2:
        return (shape[1],), False
    if len(shape) == 3:
        return (1, shape[1], shape[2]), False
    if len(shape) == 4 and shape[1] in CHANNELS:
        return tuple(shape[1:]), False
    if len(shape) == 4 and shape[3] in CHANNELS:
        return (shape[3], shape[1], shape[2]), True
    raise DataError(f"{found}; expected {ACCEPTED}")


def _as_numpy(array: Any, where: str) -> np.ndarray:
    array = as_array(array, where)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise DataError(f"{where} holds {array.dtype} values; expected {ACCEPTED}")
    if array.ndim == 0 or array.shape[0] == 0:
        raise DataError(f"{where} holds no examples (shape {tuple(array.shape)})")
    if array.size == 0:
        raise DataError(
            f"{where} holds examples of no values (shape {tuple(array.shape)}); each "
            f"example needs at least one value"
        )
    return array


def _blocks(array: np.ndarray, index: Optional[np.ndarray], chunk: int = 4096):
    """The rows of ``array`` (those in ``index``, sorted, when given) a block at a time: a
    memory-mapped file is read block by block, never whole."""
    n = len(array) if index is None else len(index)
    for i in range(0, n, chunk):
        yield np.asarray(
            array[i : i + chunk] if index is None else array[index[i : i + chunk]]
        )


def value_range(
    array: np.ndarray, where: str, index: Optional[np.ndarray] = None
) -> Tuple[float, float, bool]:
    """(lowest value, highest value, whether all are whole numbers); refuses NaN and inf."""
    low, high, whole = math.inf, -math.inf, True
    for block in _blocks(array, index):
        if np.issubdtype(block.dtype, np.floating):
            if not np.isfinite(block).all():
                raise DataError(
                    f"{where} holds NaN or infinite values; expected {ACCEPTED}"
                )
            whole = whole and bool((block == np.round(block)).all())
        low, high = min(low, float(block.min())), max(high, float(block.max()))
    return low, high, whole


def grey_scale(low: float, high: float, whole: bool, where: str) -> float:
    """The divisor that maps the values to [0, 1]: 1 for values in [0, 1], 255 for whole
    grey levels up to 255; anything else is refused."""
    if low < 0 or high > 255 or (high > 1 and not whole):
        kind = "integers" if whole else "fractions"
        raise DataError(
            f"{where} holds values from {low:g} to {high:g} ({kind}); expected {ACCEPTED}"
        )
    return 255.0 if high > 1 else 1.0


def as_rows(
    array: Any,
    where: str,
    index: Optional[np.ndarray] = None,
    scale: Optional[float] = None,
) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """Validate user data and return (float32 rows (N, D) in [0, 1], one example's shape).

    ``array`` is a NumPy array (a memory-mapped one is read a block of rows at a time, so no
    float64 copy of the file is ever made) or a torch tensor, of any real dtype; with
    ``index``, only those rows. ``scale`` (255 or 1) is found from the values unless given.
    """
    array = _as_numpy(array, where)
    shape, channels_last = example_shape(array.shape, where)
    if scale is None:
        scale = grey_scale(*value_range(array, where, index), where)
    n = len(array) if index is None else len(index)
    rows = torch.empty(n, math.prod(shape), dtype=torch.float32)
    start = 0
    for block in _blocks(array, index):
        block = block.astype(np.float32, copy=False)
        if channels_last:
            block = block.transpose(0, 3, 1, 2)
        rows[start : start + len(block)] = torch.from_numpy(
            np.ascontiguousarray(block).reshape(len(block), -1)
        )
        start += len(block)
    return rows.div_(scale) if scale != 1.0 else rows, shape


def drawn_as(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """The (H, W) an example of ``shape`` is drawn as: (H, W) of an image, a square for flat
    data of square length, else one row."""
    if len(shape) == 3:
        return (shape[1], shape[2])
    side = math.isqrt(shape[0])
    return (side, side) if side * side == shape[0] else (1, shape[0])


def seeded_split(n: int, config: DataConfig) -> Dict[str, np.ndarray]:
    """Row indices of the train/valid/test splits of one array: a permutation drawn from
    ``config.split_seed``; ``test_fraction`` and ``valid_fraction`` of the rows (at least one
    test row) go to test and validation."""
    order = np.random.RandomState(config.split_seed).permutation(n)
    n_test = max(1, round(n * config.test_fraction))
    n_valid = round(n * config.valid_fraction)
    if n - n_test - n_valid < 1:
        raise DataError(
            f"{n} examples leave none for training after a test fraction of "
            f"{config.test_fraction} and a validation fraction of {config.valid_fraction}"
        )
    return {
        "test": order[:n_test],
        "valid": order[n_test : n_test + n_valid],
        "train": order[n_test + n_valid :],
    }


def from_splits(
    name: str,
    splits: Dict[str, Any],
    labels: Dict[str, Any],
    index: Optional[Dict[str, np.ndarray]] = None,
    members: bool = False,
) -> Dataset:
    """A :class:`Dataset` from arrays per split (``train`` and ``test``; ``valid`` optional),
    or from one array and the row ``index`` of each split, validated by :func:`as_rows`. The
    grey scale (1 or 255) is decided over all splits together, and every split must have
    the same example shape. Labels per split are checked by :func:`labels.check_labels`.
    With ``members``, messages name the arrays as members of the file ``name`` (an .npz).
    """
    index = index or {}

    def called(key: str) -> str:
        if members:
            return f"member '{key}' of {name}"
        split, _, kind = key.partition("_")
        return f"the {split} {kind or 'split'} of {name}"

    given = {
        s: _as_numpy(a, called(s))
        for s, a in splits.items()
        if a is not None and (s not in index or len(index[s]))
    }
    ranges = [value_range(a, f"{name}", index.get(s)) for s, a in given.items()]
    scale = grey_scale(
        min(r[0] for r in ranges),
        max(r[1] for r in ranges),
        all(r[2] for r in ranges),
        name,
    )
    rows, shapes = {}, {}
    for split, array in given.items():
        rows[split], shapes[split] = as_rows(
            array, called(split), index.get(split), scale
        )
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{s} {shape}" for s, shape in shapes.items())
        raise DataError(f"the splits of {name} differ in example shape: {found}")
    shape = shapes["train"]
    tensors = {
        s: split_labels(v, rows.get(s), s, called(f"{s}_labels"))
        for s, v in labels.items()
    }
    return Dataset(
        name,
        rows["train"],
        rows["test"],
        drawn_as(shape),
        valid=rows.get("valid"),
        train_labels=tensors.get("train"),
        test_labels=tensors.get("test"),
        example_shape=shape,
    )
