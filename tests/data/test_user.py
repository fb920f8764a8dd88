"""The user's own files refused in one line, through the real command line (issue 26, groups
1 and 2): every malformed array, archive, label set and image folder gets one ``error:``
line naming the file, the member and what was found, and nothing is allocated from a header
before its size is checked."""

import os
from pathlib import Path

import numpy as np
import pytest

TRAIN = [
    "train",
    "--latent-dim",
    "2",
    "--set",
    "model.hidden=[8]",
    "--set",
    "data.binarize=false",
    "--likelihood",
    "continuous_bernoulli",
    "--epochs",
    "1",
    "--no-progress",
]


def train_on(cli_error, path: Path, tmp_path: Path) -> str:
    return cli_error(
        [
            *TRAIN,
            "--dataset",
            "array",
            "--data-path",
            str(path),
            "--out",
            str(tmp_path / "r"),
        ],
    )


def npy_header(path: Path, shape: str, descr: str = "<f8", data: bytes = b"") -> Path:
    """A .npy file whose header says ``shape`` (any text) and whose data is ``data``."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path.write_bytes(
        b"\x93NUMPY\x01\x00"
        + len(header).to_bytes(2, "little")
        + header.encode()
        + data
    )
    return path


def rand(*shape):
    return np.random.RandomState(0).rand(*shape)


# group 1: arrays ----------------------------------------------------------------------------
def test_a_0d_array(tmp_path, cli_error):
    np.save(tmp_path / "x.npy", np.array(3.0))
    assert train_on(cli_error, tmp_path / "x.npy", tmp_path) == (
        "'x.npy' holds a single number (a 0-d array of float64), not examples; save an "
        "array of shape (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)"
    )
    np.savez(tmp_path / "x.npz", np.array(3.0))
    assert train_on(cli_error, tmp_path / "x.npz", tmp_path) == (
        "member 'arr_0' of 'x.npz' holds a single number (a 0-d array of float64), not "
        "examples; save an array of shape (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)"
    )


def test_headers_with_negative_or_absurd_shapes(tmp_path, cli_error, monkeypatch):
    assert train_on(cli_error, npy_header(tmp_path / "n.npy", "(-5, 3)"), tmp_path) == (
        "'n.npy': its header claims shape (-5, 3), a negative size; the file is corrupt"
    )
    allocated = []
    real = np.load
    monkeypatch.setattr(
        np, "load", lambda *a, **k: allocated.append(a) or real(*a, **k)
    )
    absurd = npy_header(
        tmp_path / "a.npy", "(100000000000, 100000000)", data=b"\0" * 64
    )
    assert train_on(cli_error, absurd, tmp_path) == (
        "'a.npy': its header claims shape (100000000000, 100000000) of float64, "
        "80000000000000000000 bytes, but the file holds 64 bytes of data; it is truncated "
        "or corrupt"
    )
    assert allocated == []  # refused from the header alone
    monkeypatch.setattr(np, "load", real)
    np.save(tmp_path / "big.npy", rand(50, 4))
    monkeypatch.setattr("pyro_vae.config.sizes.memory_bytes", lambda: 1000)
    assert train_on(cli_error, tmp_path / "big.npy", tmp_path) == (
        "'big.npy' holds 50 x 4 values (as float32 rows), about 800 bytes, more than half "
        "of this machine's 1000 bytes of memory; use a smaller file or a machine with "
        "more memory"
    )


def test_truncated_and_corrupt_npz_and_a_npy_under_an_npz_name(tmp_path, cli_error):
    np.savez_compressed(tmp_path / "good.npz", train=rand(50, 4), test=rand(10, 4))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    assert train_on(cli_error, tmp_path / "t.npz", tmp_path) == (
        "'t.npz' is not a complete .npz archive (File is not a zip file); it is truncated "
        "or was not written by np.savez"
    )
    corrupt = bytearray(raw)
    for i in range(200, 260):  # inside the compressed 'train' member
        corrupt[i] ^= 0xFF
    (tmp_path / "c.npz").write_bytes(bytes(corrupt))
    assert train_on(cli_error, tmp_path / "c.npz", tmp_path) == (
        "cannot read member 'train' of 'c.npz': Bad CRC-32 for file 'train.npy'; the "
        "file is corrupt"
    )
    np.save(tmp_path / "one.npy", rand(20, 4))
    os.rename(tmp_path / "one.npy", tmp_path / "one.npz")
    assert train_on(cli_error, tmp_path / "one.npz", tmp_path) == (
        "'one.npz' is a .npy file (one array) under an .npz name; rename it to 'one.npy'"
    )


def test_pickles_are_never_loaded(tmp_path, cli_error):
    np.savez(
        tmp_path / "p.npz", train=np.array([{}] * 4, dtype=object), test=rand(2, 3)
    )
    assert train_on(cli_error, tmp_path / "p.npz", tmp_path) == (
        "member 'train' of 'p.npz' holds Python objects (dtype object), which are never "
        "unpickled; save an array of numbers"
    )


def test_splits_with_zero_features(tmp_path, cli_error):
    np.savez(tmp_path / "z.npz", train=np.zeros((10, 0)), test=np.zeros((5, 0)))
    assert train_on(cli_error, tmp_path / "z.npz", tmp_path) == (
        "member 'train' of 'z.npz' holds examples of no values (shape (10, 0)); each "
        "example needs at least one value"
    )
    np.save(tmp_path / "z.npy", np.zeros((10, 2, 0)))
    assert train_on(cli_error, tmp_path / "z.npy", tmp_path) == (
        "'z.npy' holds examples of no values (shape (10, 2, 0)); each example needs at "
        "least one value"
    )


LABELS = (
    "labels are one whole number >= 0 per example, shape (N,); in 'train' -1 marks an "
    "unlabelled example"
)


@pytest.mark.parametrize(
    "labels, found",
    [
        (np.arange(7), "holds 7 labels for the 10 examples of 'train'"),
        (np.array([0.0] * 9 + [np.nan]), "holds NaN or infinite values"),
        (np.array([0.5] * 10), "holds fractional values such as 0.5"),
        (np.array(["a"] * 10), "holds <U1 values"),
        (np.zeros((10, 3)), "has shape (10, 3)"),
        (np.array([0] * 9 + [-2]), "holds negative values such as -2"),
    ],
)
def test_labels_are_validated(tmp_path, cli_error, labels, found):
    np.savez(
        tmp_path / "l.npz", train=rand(10, 4), test=rand(5, 4), train_labels=labels
    )
    assert train_on(cli_error, tmp_path / "l.npz", tmp_path) == (
        f"member 'train_labels' of 'l.npz' {found}; {LABELS}"
    )


def test_minus_one_marks_an_unlabelled_example_in_train_only(tmp_path, cli_error):
    from pyro_vae import data
    from pyro_vae.config import DataConfig

    partly = np.array([0, 1, -1, -1, 2, -1, 0, 1, 2, -1])
    np.savez(
        tmp_path / "p.npz", train=rand(10, 4), test=rand(5, 4), train_labels=partly
    )
    ds = data.load(DataConfig(dataset="array", data_path=str(tmp_path / "p.npz")))
    assert ds.train_labels.tolist() == partly.tolist()
    np.savez(
        tmp_path / "t.npz",
        train=rand(10, 4),
        test=rand(5, 4),
        test_labels=np.array([0, 1, -1, 2, 0]),
    )
    assert train_on(cli_error, tmp_path / "t.npz", tmp_path) == (
        f"member 'test_labels' of 't.npz' holds negative values such as -1; {LABELS}"
    )


def test_labels_without_their_split(tmp_path, cli_error):
    np.savez(tmp_path / "l.npz", train=rand(10, 4), test=rand(5, 4), valid_labels=[1])
    assert train_on(cli_error, tmp_path / "l.npz", tmp_path) == (
        "'l.npz' holds 'valid_labels' but no 'valid' array for them to label"
    )


def test_good_labels_still_load(tmp_path):
    from pyro_vae import data
    from pyro_vae.config import DataConfig

    np.savez(
        tmp_path / "l.npz",
        train=rand(10, 4),
        test=rand(5, 4),
        train_labels=np.arange(10.0),  # whole floats are fine
        test_labels=np.arange(5, dtype=np.uint8),
    )
    ds = data.load(DataConfig(dataset="array", data_path=str(tmp_path / "l.npz")))
    assert ds.train_labels.tolist() == list(range(10))
    assert ds.test_labels.tolist() == list(range(5))


# group 2: image folders ---------------------------------------------------------------------
def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def images_on(cli_error, directory, tmp_path, *more) -> str:
    argv = [*TRAIN, "--dataset", "images", "--data-dir", str(directory), *more]
    return cli_error([*argv, "--out", str(tmp_path / "r")])


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height grey pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_header(tmp_path, cli_error):
    folder = tmp_path / "photos"
    for i in range(4):
        write_png(folder / f"{i}.png", np.zeros((6, 6), dtype=np.uint8))
    bomb = png_header_only(folder / "bomb.png", 20000, 20000)
    assert images_on(cli_error, folder, tmp_path) == (
        f"image '{bomb}' claims 20000 x 20000 = 400000000 pixels, more than Pillow's "
        f"limit of 178956970 for one image (a decompression bomb?); remove the file"
    )


def test_image_size_beyond_memory(tmp_path, cli_error, monkeypatch):
    folder = tmp_path / "photos"
    for i in range(6):
        write_png(folder / f"{i}.png", np.zeros((6, 6), dtype=np.uint8))
    monkeypatch.setattr("pyro_vae.config.sizes.memory_bytes", lambda: 16 * 2**30)
    loaded = []
    monkeypatch.setattr("PIL.Image.Image.load", lambda im: loaded.append(im))
    err = images_on(cli_error, folder, tmp_path, "--image-size", "100000", "100000")
    assert err == (
        f"the 6 images in '{folder}' at 100000 x 100000 pixels with 1 channel make "
        f"6e+10 values (float32, and their rows), about 447 GiB, more than half of this "
        f"machine's 16 GiB of memory; use a smaller data.image_size (--image-size H W)"
    )
    assert loaded == []  # refused from the headers alone


def test_a_data_dir_whose_name_is_not_utf8_is_refused_before_loading(
    tmp_path, cli_error
):
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname"))
    for i in range(4):
        write_png(folder / f"{i}.png", np.zeros((6, 6), dtype=np.uint8))
    assert images_on(cli_error, folder, tmp_path) == (
        f"[data] data_dir {os.fsencode(folder)!r} is not valid UTF-8 text, which the "
        f"run's config.toml must record; rename it, or link to it under a UTF-8 name"
    )
    assert not (tmp_path / "r" / "config.toml").exists()


def test_16_bit_images_are_scaled_by_65535_not_clipped(tmp_path):
    from pyro_vae import data
    from pyro_vae.config import DataConfig

    levels = (np.arange(36).reshape(6, 6) * 1800).astype(np.uint16)  # up to 63000
    for i in range(5):
        write_png(tmp_path / "deep" / f"{i}.png", levels)
    config = DataConfig(
        dataset="images", data_dir=str(tmp_path / "deep"), binarize=False
    )
    ds = data.load(config)
    expected = levels.reshape(-1).astype(np.float32) / np.float32(65535)
    assert np.array_equal(ds.train[0].numpy(), expected)
    # beside an 8-bit colour image, the 16-bit grey one keeps its levels, on 3 channels
    write_png(tmp_path / "deep" / "rgb.png", np.full((6, 6, 3), 255, dtype=np.uint8))
    everything = data.load(config)
    rows = torch_cat(everything).reshape(-1, 3, 36)
    grey = rows[(rows[:, 0] != 1).any(-1)]
    assert len(grey) == 5 and all(np.array_equal(c.numpy(), expected) for c in grey[0])


def torch_cat(ds):
    import torch

    return torch.cat([ds.train, ds.test])
