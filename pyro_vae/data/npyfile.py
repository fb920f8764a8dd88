"""Reading the user's NumPy files without trusting them.

A ``.npy`` file (and each member ``NAME.npy`` of an ``.npz`` zip archive) starts with a header
that states the array's dtype and shape. Everything is checked from the header before one
byte of the array is allocated: a 0-d array, a negative size, Python objects (never
unpickled: ``allow_pickle=False`` throughout), examples with no values, a shape whose bytes
(prod(shape) x itemsize) exceed the bytes the file (or the zip member) actually holds, and
data whose float32 rows would not fit in memory (``config.require_memory``). Only then is the
array read: a ``.npy`` memory-mapped, an ``.npz`` member decompressed, with a corrupt or
truncated archive reported by file and member. Every refusal is one ``DataError`` line.
"""

import math
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from numpy.lib import format as npformat

from pyro_vae.config import require_memory
from pyro_vae.errors import DataError

MAGIC = b"\x93NUMPY"
SHAPES = "(N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)"
Header = Tuple[
    Tuple[int, ...], np.dtype, int
]  # shape, dtype, bytes of data it promises


def _header(stream, where: str) -> Header:
    """The shape and dtype a header states, checked, and the data bytes they promise."""
    try:
        major, _ = npformat.read_magic(stream)
        if major == 1:
            shape, _, dtype = npformat.read_array_header_1_0(stream)
        elif major == 2:
            shape, _, dtype = npformat.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {major}.x is not supported")
    except (ValueError, EOFError) as err:  # a damaged archive is the caller's to report
        raise DataError(f"cannot read {where} as a NumPy file: {err}") from None
    if any(s < 0 for s in shape):
        raise DataError(
            f"{where}: its header claims shape {shape}, a negative size; the file is corrupt"
        )
    if dtype.hasobject:
        raise DataError(
            f"{where} holds Python objects (dtype object), which are never unpickled; "
            f"save an array of numbers"
        )
    if not shape:
        raise DataError(
            f"{where} holds a single number (a 0-d array of {dtype}), not examples; save an "
            f"array of shape {SHAPES}"
        )
    if shape[0] and math.prod(shape[1:]) == 0:
        raise DataError(
            f"{where} holds examples of no values (shape {shape}); each example needs at "
            f"least one value"
        )
    return shape, dtype, math.prod(shape) * dtype.itemsize


def _check_sizes(where: str, header: Header, have: int) -> None:
    shape, dtype, need = header
    if need > have:
        raise DataError(
            f"{where}: its header claims shape {shape} of {dtype}, {need} bytes, but the "
            f"file holds {have} bytes of data; it is truncated or corrupt"
        )


def _fits_in_memory(where: str, shapes) -> None:
    values = sum(math.prod(s) for s in shapes)
    dims = " + ".join(" x ".join(map(str, (s[0], math.prod(s[1:])))) for s in shapes)
    require_memory(
        4 * values,
        f"{where} holds {dims} values (as float32 rows)",
        "use a smaller file or a machine with more memory",
        DataError,
    )


def read_npy(path: Path, name: str) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped (read a block of rows at a time later),
    after its header has been checked against the file's size and this machine's memory.
    """
    with open(path, "rb") as stream:
        header = _header(stream, name)
        offset = stream.tell()
    _check_sizes(name, header, path.stat().st_size - offset)
    _fits_in_memory(name, [header[0]])
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"cannot read {name} as a NumPy file: {err}") from None


def read_npz(path: Path, name: str) -> Dict[str, np.ndarray]:
    """Every member of an ``.npz`` archive by its name (``train`` for ``train.npy``), each
    header checked against the member's size, all of them against memory, before reading.
    """
    with open(path, "rb") as stream:
        if stream.read(len(MAGIC)) == MAGIC:
            raise DataError(
                f"{name} is a .npy file (one array) under an .npz name; rename it to "
                f"'{path.stem}.npy'"
            )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(
            f"{name} is not a complete .npz archive ({err}); it is truncated or was not "
            f"written by np.savez"
        ) from None
    with archive:
        headers = {}
        for info in archive.infolist():
            member = info.filename[: -len(".npy")]
            where = f"member '{member}' of {name}"
            if not info.filename.endswith(".npy"):
                raise DataError(
                    f"{name} holds '{info.filename}', which is not a NumPy array; an .npz "
                    f"holds only the .npy members np.savez writes"
                )
            with _reading(where):
                with archive.open(info) as stream:
                    header = _header(stream, where)
                    _check_sizes(where, header, info.file_size - stream.tell())
            headers[member] = header
        _fits_in_memory(name, [h[0] for h in headers.values()])
        arrays = {}
        for member in headers:
            with _reading(f"member '{member}' of {name}"):
                with archive.open(f"{member}.npy") as stream:
                    arrays[member] = npformat.read_array(stream, allow_pickle=False)
    return arrays


class _reading:
    """Turn the errors of reading a zip member (a bad CRC, a broken deflate stream, a short
    read) into one ``DataError`` naming the member."""

    def __init__(self, where: str):
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, _) -> bool:
        broken = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)
        if kind is not None and issubclass(kind, broken) and kind is not DataError:
            raise DataError(
                f"cannot read {self.where}: {err}; the file is corrupt"
            ) from None
        return False
