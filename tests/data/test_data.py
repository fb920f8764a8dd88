import dataclasses
import gzip
import hashlib

import numpy as np
import pytest
import torch

from pyro_vae import data
from pyro_vae.config import DataConfig
from pyro_vae.data import builtin as data_mnist
from pyro_vae.errors import DataError
from pyro_vae.registry import load_library_parts


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


# --- the registry and the user's own data (array, images) ---------------------------------


def array_config(path, **kw):
    return DataConfig(dataset="array", data_path=str(path), binarize=False, **kw)


def test_every_registered_data_set_is_documented():
    from pyro_vae.registry import DATASETS

    assert {"digits", "binarized-mnist", "mnist", "array", "images"} <= set(
        DATASETS.names()
    )
    for name in DATASETS.names():
        assert (DATASETS.get(name).__doc__ or "").strip(), name


def check_channels_last_is_transposed(tmp_path):
    """An (N, H, W, 3) uint8 array gives (3, H, W) examples, flattened channel-first."""
    images = np.random.RandomState(0).randint(0, 256, size=(20, 4, 5, 3))
    np.save(tmp_path / "hwc.npy", images.astype(np.uint8))
    ds = data.load(array_config(tmp_path / "hwc.npy", test_fraction=0.25))
    assert ds.shape == (3, 4, 5) and ds.data_dim == 60 and ds.image_shape == (4, 5)
    order = np.sort(np.random.RandomState(0).permutation(20)[5:])
    expected = images[order].transpose(0, 3, 1, 2).reshape(15, 60) / 255.0
    assert np.allclose(ds.train.numpy(), expected, atol=1e-6)


def test_array_npy_shapes_and_grey_levels(tmp_path):
    check_channels_last_is_transposed(tmp_path)
    rng = np.random.RandomState(1)
    for shape, example in [
        ((30, 7), (7,)),
        ((30, 6, 6), (1, 6, 6)),
        ((30, 1, 6, 6), (1, 6, 6)),
        ((30, 3, 4, 4), (3, 4, 4)),
        ((30, 4, 4, 1), (1, 4, 4)),
    ]:
        np.save(tmp_path / "a.npy", rng.rand(*shape))
        ds = data.load(array_config(tmp_path / "a.npy"))
        assert ds.shape == example and len(ds.train) == 27 and len(ds.test) == 3
        assert 0 <= ds.train.min() and ds.train.max() <= 1


def test_the_transposition_check_catches_a_loader_that_forgets_it(
    tmp_path, monkeypatch
):
    """Injected bug: example_shape says channels-first for (N, H, W, 3) arrays."""
    real = data.example_shape

    def forgetful(shape, where):
        found, _ = real(shape, where)
        return found, False

    monkeypatch.setattr(data.dataset, "example_shape", forgetful)
    with pytest.raises(AssertionError):
        check_channels_last_is_transposed(tmp_path)


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((4, 2, 3, 5, 5)), "shape (4, 2, 3, 5, 5); expected (N, D) rows"),
        (np.zeros((4, 2, 5, 5)), "shape (4, 2, 5, 5); expected"),
        (np.zeros(7), "shape (7,); expected"),
        (np.full((4, 3), -0.5), "values from -0.5 to -0.5 (fractions); expected"),
        (np.full((4, 3), 1.5), "values from 1.5 to 1.5 (fractions)"),
        (np.full((4, 3), 300), "values from 300 to 300 (integers)"),
        (np.array([[0.5, np.nan]]), "NaN or infinite"),
        (np.array([["a", "b"]]), "holds <U1 values"),
    ],
)
def test_bad_arrays_are_refused_saying_what_was_found(tmp_path, array, message):
    with pytest.raises(DataError) as err:
        data.as_rows(array, "the array")
    assert message in str(err.value) and "in [0, 1] or integer grey levels" in str(
        err.value
    )


def test_npy_is_memory_mapped(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.random.rand(20, 4))
    modes = []
    real = np.load
    monkeypatch.setattr(
        np, "load", lambda *a, **k: modes.append(k.get("mmap_mode")) or real(*a, **k)
    )
    data.load(array_config(tmp_path / "a.npy"))
    assert modes == ["r"]


def test_single_array_split_is_seeded_and_recorded(tmp_path):
    from pyro_vae import config as cfg

    np.save(tmp_path / "a.npy", np.arange(200, dtype=np.float64).reshape(100, 2) / 200)
    c = cfg.load(
        None,
        {
            "data.dataset": "array",
            "data.data_path": str(tmp_path / "a.npy"),
            "data.valid_fraction": 0.2,
            "data.split_seed": 3,
            "data.binarize": False,
        },
    )
    assert "split_seed = 3" in c.to_toml() and "test_fraction = 0.1" in c.to_toml()
    a, b = data.load(c.data), data.load(c.data)
    other = data.load(dataclasses.replace(c.data, split_seed=4))
    assert (len(a.train), len(a.valid), len(a.test)) == (70, 20, 10)
    assert torch.equal(a.test, b.test) and not torch.equal(a.test, other.test)
    together = torch.cat([a.train, a.valid, a.test])
    assert len(torch.unique(together[:, 0])) == 100  # a partition: no row twice


def test_npz_with_named_splits_and_labels(tmp_path):
    rng = np.random.RandomState(0)
    np.savez(
        tmp_path / "d.npz",
        train=rng.randint(0, 256, (12, 1, 4, 4)).astype(np.uint8),
        test=rng.randint(0, 256, (5, 1, 4, 4)).astype(np.uint8),
        test_labels=np.arange(5),
    )
    ds = data.load(array_config(tmp_path / "d.npz"))
    assert (len(ds.train), len(ds.test), ds.shape) == (12, 5, (1, 4, 4))
    assert ds.valid is None and ds.test_labels.tolist() == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "bad.npz", train=np.zeros((3, 2)), images=np.zeros((3, 2)))
    with pytest.raises(DataError, match="holds arrays train, images; an .npz holds"):
        data.load(array_config(tmp_path / "bad.npz"))
    np.savez(tmp_path / "mixed.npz", train=np.zeros((3, 4)), test=np.zeros((3, 5)))
    with pytest.raises(DataError, match="differ in example shape"):
        data.load(array_config(tmp_path / "mixed.npz"))


def test_array_needs_a_readable_file(tmp_path):
    with pytest.raises(DataError, match="pass --data-path FILE"):
        data.load(DataConfig(dataset="array"))
    with pytest.raises(DataError, match="does not exist"):
        data.load(array_config(tmp_path / "none.npy"))
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read 'x.npy' as a NumPy file"):
        data.load(array_config(tmp_path / "x.npy"))


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_image_folder_with_labels_and_colour(tmp_path):
    rng = np.random.RandomState(0)
    for label in ("cat", "dog"):
        for i in range(5):
            write_png(tmp_path / label / f"{i}.png", rng.randint(0, 256, (6, 5)))
    write_png(tmp_path / "dog" / "red.png", np.tile([255, 0, 0], (6, 5, 1)))
    ds = data.load(
        DataConfig(
            dataset="images", data_dir=str(tmp_path), binarize=False, test_fraction=0.5
        )
    )
    assert ds.shape == (3, 6, 5) and len(ds.train) + len(ds.test) == 11
    labels = torch.cat([ds.train_labels, ds.test_labels])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 6
    everything = torch.cat([ds.train, ds.test]).reshape(-1, 3, 6, 5)
    red = everything[(everything[:, 0] == 1).all(-1).all(-1)]
    assert len(red) == 1 and red[0, 1:].abs().max() == 0  # pure red, channel-first
    assert ds.label_names == ("cat", "dog")  # label k names sub-folder k


def test_image_sizes_must_agree_or_be_resized(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((6, 6)))
    write_png(tmp_path / "b.png", np.zeros((8, 6)))
    write_png(tmp_path / "c.png", np.full((8, 6), 255))
    config = DataConfig(dataset="images", data_dir=str(tmp_path), binarize=False)
    with pytest.raises(DataError) as err:
        data.load(config)
    assert "8x6 (2 files), 6x6 (1 files)" in str(err.value)
    assert "data.image_size" in str(err.value)
    ds = data.load(dataclasses.replace(config, image_size=(4, 3)))
    assert ds.shape == (1, 4, 3)
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="both image files and sub-folders"):
        data.load(config)
    with pytest.raises(DataError, match="holds no PNG/JPEG"):
        data.load(dataclasses.replace(config, data_dir=str(tmp_path / "sub")))


def test_data_config_validation():
    from pyro_vae import config as cfg
    from pyro_vae.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown dataset 'imagse' .did you mean"):
        cfg.load(None, {"data.dataset": "imagse"})
    with pytest.raises(ConfigError, match="image_size must be .height, width."):
        cfg.load(None, {"data.image_size": 28})
    with pytest.raises(ConfigError, match="test_fraction must be in"):
        cfg.load(None, {"data.test_fraction": 1.0})
    assert cfg.load(None, {"data.image_size": [4, 3]}).data.image_size == (4, 3)


def test_grey_scale_is_decided_over_all_splits_together(tmp_path):
    """A dark test split (levels 0 and 1 of 255) must be scaled like the training split."""
    train = np.full((4, 3), 255, dtype=np.uint8)
    test = np.ones((2, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", train=train, test=test)
    ds = data.load(array_config(tmp_path / "d.npz"))
    assert ds.train.max() == 1 and torch.allclose(ds.test, torch.full((2, 3), 1 / 255))


def test_a_data_set_registered_from_user_code_is_one_function(monkeypatch):
    from pyro_vae import config as cfg
    from pyro_vae.registry import DATASETS

    load_library_parts()
    monkeypatch.setattr(DATASETS, "_factories", dict(DATASETS._factories))

    @DATASETS.register("toy")
    def toy(config: DataConfig) -> data.Dataset:
        """Four flat rows of two values."""
        rows = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
        return data.from_splits("toy", {"train": rows[:3], "test": rows[3:]}, {})

    ds = data.load(cfg.load(None, {"data.dataset": "toy"}).data)
    assert ds.shape == (2,) and ds.train.shape == (3, 2) and ds.test.shape == (1, 2)


def test_mnist_image_size_comes_from_the_header_and_must_agree(tmp_path):
    rng = np.random.RandomState(2)
    for prefix, side in (("train", 20), ("t10k", 20)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte",
            rng.randint(0, 256, (3, side, side)),
            2051,
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.zeros(3), 2049)
    config = DataConfig(dataset="mnist", data_dir=str(tmp_path), binarize=False)
    assert data.load(config).shape == (1, 20, 20)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28)), 2051)
    with pytest.raises(DataError, match="differ in size: train 20x20, test 28x28"):
        data.load(config)
