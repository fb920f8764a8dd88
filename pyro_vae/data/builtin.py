"""The built-in data sets: embedded digits, binarized MNIST, MNIST.

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images; the embedded default, no files
  needed), scaled to [0, 1]; a fixed 300-image test split.
* ``binarized-mnist``: the statically binarized MNIST of Larochelle & Murray (2011), the text
  files ``binarized_mnist_{train,valid,test}.amat`` (plain or ``.gz``), 50k/10k/10k.
* ``mnist``: the original MNIST IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
  (plain or ``.gz``), grey levels scaled to [0, 1].

There is no download code: point ``--data-dir`` at a directory holding the files.
"""

import gzip
import zlib
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from pyro_vae.config import DataConfig
from pyro_vae.data.dataset import Dataset
from pyro_vae.errors import DataError
from pyro_vae.registry import DATASETS

AMAT_SPLITS = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}
IDX_SPLITS = {"train": "train", "test": "t10k"}
WHERE_FROM = {
    "binarized-mnist": "the static binarization of Larochelle & Murray (2011), distributed "
    "with the IWAE code of Burda et al. and by most VAE benchmark suites",
    "mnist": "Yann LeCun's MNIST page (the four IDX files, gzipped)",
}


def _data_dir(config: DataConfig) -> Path:
    if config.data_dir is None:
        raise DataError(
            f"data set '{config.dataset}' is read from files: pass --data-dir DIR (or set "
            f"data.data_dir in the config) pointing at a directory with {_expected(config.dataset)}"
        )
    path = Path(config.data_dir).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data directory '{path}' does not exist; it should hold {_expected(config.dataset)}"
        )
    return path


def _expected(dataset: str) -> str:
    if dataset == "binarized-mnist":
        names = ", ".join(AMAT_SPLITS.values())
    else:
        names = ", ".join(
            f"{prefix}-{kind}-ubyte"
            for prefix in IDX_SPLITS.values()
            for kind in ("images-idx3", "labels-idx1")
        )
    return f"the files {names} (each plain or .gz), from {WHERE_FROM[dataset]}"


def _find(directory: Path, filename: str, dataset: str) -> Path:
    for candidate in (directory / filename, directory / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"'{filename}' (or '{filename}.gz') is missing from '{directory}'; "
        f"the directory should hold {_expected(dataset)}"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"cannot read '{path}': the file is truncated or corrupt ({err})"
        ) from None


@DATASETS.register("digits")
def load_digits(config: DataConfig) -> Dataset:
    """Embedded, no files needed: scikit-learn's 8x8 digits in [0, 1], 1497/300 images.

    The last 300 images (shuffled once with a fixed seed) form the test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    labels = torch.tensor(bunch.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return Dataset(
        "digits",
        images[:-300],
        images[-300:],
        (8, 8),
        train_labels=labels[:-300],
        test_labels=labels[-300:],
    )


def read_amat(path: Path, width: int = 784) -> torch.Tensor:
    """Parse a binarized-MNIST ``.amat[.gz]`` file: one image a line, ``width`` space-separated
    0/1 values. Refuses any other character, a row of another width, or an empty file.
    """
    raw = np.frombuffer(_read_bytes(Path(path)), dtype=np.uint8)
    is_digit = (raw == ord("0")) | (raw == ord("1"))
    allowed = is_digit | np.isin(raw, np.frombuffer(b" \t\r\n", dtype=np.uint8))
    if not allowed.all():
        at = int(np.argmin(allowed))
        line = int((raw[:at] == ord("\n")).sum()) + 1
        raise DataError(
            f"'{path}' line {line}: found {bytes(raw[at:at + 12])!r}; a binarized-MNIST .amat "
            f"file holds only 0/1 values separated by spaces"
        )
    if (is_digit[1:] & is_digit[:-1]).any():
        line = (
            int(
                (raw[: int(np.argmax(is_digit[1:] & is_digit[:-1]))] == ord("\n")).sum()
            )
            + 1
        )
        raise DataError(
            f"'{path}' line {line}: values must be single 0/1 digits separated by spaces"
        )
    ends = np.flatnonzero(raw == ord("\n"))
    if len(raw) and raw[-1] != ord("\n"):
        ends = np.append(ends, len(raw) - 1)
    starts = (
        np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, np.int64)
    )
    counts = np.add.reduceat(is_digit, starts, dtype=np.int64) if len(ends) else starts
    rows = counts[counts > 0]
    if len(rows) == 0:
        raise DataError(f"'{path}' holds no images: the file is empty")
    bad = np.flatnonzero(counts[counts > 0] != width)
    if len(bad):
        line = int(np.flatnonzero(counts > 0)[bad[0]]) + 1
        raise DataError(
            f"'{path}' line {line}: {int(rows[bad[0]])} values, expected {width} "
            f"(a {int(width ** 0.5)}x{int(width ** 0.5)} image); the file is malformed or truncated"
        )
    values = raw[is_digit] - ord("0")
    return torch.from_numpy(values.reshape(len(rows), width).astype(np.float32))


@DATASETS.register("binarized-mnist")
def load_binarized_mnist(config: DataConfig) -> Dataset:
    """Static binarized MNIST: binarized_mnist_{train,valid,test}.amat[.gz] in --data-dir.

    The binarization of Larochelle & Murray (2011), 50k/10k/10k images."""
    directory = _data_dir(config)
    splits: Dict[str, torch.Tensor] = {
        split: read_amat(_find(Path(directory), name, "binarized-mnist"))
        for split, name in AMAT_SPLITS.items()
    }
    return Dataset(
        "binarized-mnist",
        splits["train"],
        splits["test"],
        (28, 28),
        valid=splits["valid"],
    )


def read_idx(path: Path) -> torch.Tensor:
    """Parse an MNIST IDX file (images: magic 2051, uint8 N x 28 x 28; labels: magic 2049)."""
    raw = _read_bytes(Path(path))
    if len(raw) < 8:
        raise DataError(
            f"'{path}' is too short to be an IDX file (it is {len(raw)} bytes)"
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (2049, 2051):
        raise DataError(
            f"'{path}' is not an MNIST IDX file: its magic number is {magic}, expected 2051 "
            f"(images) or 2049 (labels)"
        )
    ndim = magic - 2048
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start, expected = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - start != expected:
        raise DataError(
            f"'{path}' holds {len(raw) - start} data bytes but its header promises {expected} "
            f"({' x '.join(map(str, dims))}); the file is truncated or corrupt"
        )
    return torch.from_numpy(
        np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims).copy()
    )


@DATASETS.register("mnist")
def load_mnist(config: DataConfig) -> Dataset:
    """MNIST IDX files train-/t10k-{images-idx3,labels-idx1}-ubyte[.gz] in --data-dir.

    Grey levels scaled to [0, 1], 60k/10k images with labels."""
    directory = _data_dir(config)

    def pair(prefix: str) -> Tuple[torch.Tensor, torch.Tensor]:
        images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte", "mnist"))
        labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte", "mnist"))
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise DataError(
                f"MNIST '{prefix}' files do not match: images {tuple(images.shape)}, "
                f"labels {tuple(labels.shape)}"
            )
        if len(images) == 0 or images.shape[1] * images.shape[2] == 0:
            raise DataError(
                f"the MNIST '{prefix}' images file in '{directory}' holds no images (its "
                f"header says {' x '.join(map(str, images.shape))})"
            )
        shapes[prefix] = tuple(images.shape[1:])  # (H, W) from the header: any size
        return images.flatten(1).float() / 255.0, labels.long()

    shapes: Dict[str, Tuple[int, ...]] = {}  # (H, W) per file prefix
    train, train_labels = pair(IDX_SPLITS["train"])
    test, test_labels = pair(IDX_SPLITS["test"])
    train_shape, test_shape = (shapes[IDX_SPLITS[s]] for s in ("train", "test"))
    if train_shape != test_shape:
        raise DataError(
            f"the MNIST images in '{directory}' differ in size: train "
            f"{'x'.join(map(str, train_shape))}, test {'x'.join(map(str, test_shape))}; "
            f"both splits need one image size"
        )
    return Dataset(
        "mnist",
        train,
        test,
        train_shape,
        train_labels=train_labels,
        test_labels=test_labels,
    )
