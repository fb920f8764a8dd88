import gzip
import hashlib

import numpy as np
import pytest
import torch

from pyro_vae import data, data_mnist
from pyro_vae.config import DataConfig
from pyro_vae.errors import DataError


def write_amat(path, rows):
    text = "".join(" ".join(str(v) for v in row) + "\n" for row in rows)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def test_digits_is_embedded_scaled_and_binarized():
    grey = data.load(DataConfig(binarize=False))
    assert grey.train.shape == (1497, 64) and grey.test.shape == (300, 64)
    assert grey.image_shape == (8, 8) and grey.data_dim == 64
    assert (
        0 <= grey.train.min()
        and grey.train.max() == 1
        and ((grey.train > 0) & (grey.train < 1)).any()
    )
    binary = data.load(DataConfig())
    assert set(binary.train.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary.train, (grey.train > 0.5).float())
    assert binary.test_labels.shape == (300,)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_amat(tmp_path, suffix):
    rows = np.random.RandomState(0).randint(0, 2, size=(3, 784))
    path = tmp_path / f"x.amat{suffix}"
    write_amat(path, rows)
    assert torch.equal(
        data_mnist.read_amat(path), torch.tensor(rows, dtype=torch.float32)
    )


@pytest.mark.parametrize(
    "content,message",
    [
        ("0 1 0.5\n", "found b'.5"),
        ("0 1 2\n", "found b'2"),
        ("0 1 1\n0 1\n", "line 2: 2 values, expected 3"),
        ("", "holds no images: the file is empty"),
        ("01 1\n", "single 0/1 digits separated by spaces"),
        ("nan 1 0\n", "found b'nan"),
    ],
)
def test_read_amat_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.amat"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        data_mnist.read_amat(path, width=3)
    assert message in str(err.value)


def test_truncated_gzip_is_refused(tmp_path):
    path = tmp_path / "binarized_mnist_test.amat.gz"
    write_amat(path, np.zeros((50, 784), dtype=int))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        data_mnist.read_amat(path)


def test_missing_directory_and_files_name_the_expected_files(tmp_path):
    with pytest.raises(DataError, match="pass --data-dir DIR"):
        data.load(DataConfig(dataset="binarized-mnist"))
    with pytest.raises(
        DataError,
        match="does not exist; it should hold the files binarized_mnist_train.amat",
    ):
        data.load(
            DataConfig(dataset="binarized-mnist", data_dir=str(tmp_path / "nope"))
        )
    with pytest.raises(DataError) as err:
        data.load(DataConfig(dataset="binarized-mnist", data_dir=str(tmp_path)))
    assert (
        "'binarized_mnist_train.amat' (or 'binarized_mnist_train.amat.gz') is missing"
        in str(err.value)
    )
    assert "Larochelle" in str(err.value)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        data.load(DataConfig(dataset="mnist", data_dir=str(tmp_path)))


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_read_idx_and_its_errors(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, size=(5, 28, 28))
    path = tmp_path / "imgs"
    write_idx(path, images, 2051)
    assert torch.equal(
        data_mnist.read_idx(path), torch.tensor(images, dtype=torch.uint8)
    )
    write_idx(path, images, 1234)
    with pytest.raises(DataError, match="magic number is 1234"):
        data_mnist.read_idx(path)
    write_idx(path, images, 2051)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="header promises 3920"):
        data_mnist.read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        data_mnist.read_idx(path)


def test_mnist_loader_on_small_idx_files(tmp_path):
    rng = np.random.RandomState(1)
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte",
            rng.randint(0, 256, size=(n, 28, 28)),
            2051,
        )
        write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte",
            rng.randint(0, 10, size=(n,)),
            2049,
        )
    ds = data.load(DataConfig(dataset="mnist", data_dir=str(tmp_path), binarize=False))
    assert (
        ds.train.shape == (6, 784)
        and ds.test.shape == (4, 784)
        and ds.test_labels.shape == (4,)
    )
    assert 0 <= ds.train.min() and ds.train.max() <= 1


def test_real_shared_files(shared_data):
    sums = dict(
        line.split()[::-1]
        for line in (shared_data / "SHA256SUMS").read_text().splitlines()
        if line
    )
    path = shared_data / "binarized_mnist_test.amat.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[path.name]
    test = data_mnist.read_amat(path)
    assert test.shape == (10000, 784) and set(test.unique().tolist()) == {0.0, 1.0}
    assert 0.1 < test.mean() < 0.2  # about 13% of binarized MNIST pixels are on
    images = data_mnist.read_idx(shared_data / "t10k-images-idx3-ubyte.gz")
    labels = data_mnist.read_idx(shared_data / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels.max() == 9 and images.max() == 255


def test_split_lookup():
    ds = data.load(DataConfig())
    assert ds.split("test") is ds.test
    with pytest.raises(
        DataError, match="has no split 'valid'; its splits: train, test"
    ):
        ds.split("valid")
