"""The user's own data: a NumPy file (``array``) or a folder of images (``images``).

* ``array`` (``--data-path FILE``): a ``.npy`` file holding one array, split into train/test
  (and validation) by a permutation drawn from ``data.split_seed`` (``data.test_fraction``,
  ``data.valid_fraction``; all three are saved in the run's config); or an ``.npz`` file with
  arrays ``train`` and ``test`` (``valid`` and ``train_labels``/``valid_labels``/
  ``test_labels`` optional), or with one array, split as above. A ``.npy`` file is
  memory-mapped and read a block of rows at a time.
* ``images`` (``--data-dir DIR``): PNG/JPEG files, decoded with Pillow, either directly in DIR
  or one level of sub-folders whose sorted names become the labels 0, 1, ...; resized to
  ``data.image_size = [H, W]`` when it is set, else all files must share one size. Grey files
  give one channel; if any file has colour, every image is read as RGB (3 channels).

Both accept what :func:`pyro_vae.data.as_rows` accepts, and nothing else.
"""

import warnings
from collections import Counter
from pathlib import Path
from typing import List, Tuple

import numpy as np

from pyro_vae.config import DataConfig, require_memory
from pyro_vae.data.dataset import Dataset, from_splits, seeded_split
from pyro_vae.data.npyfile import read_npy, read_npz
from pyro_vae.errors import DataError
from pyro_vae.registry import DATASETS

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L")  # Pillow's modes of 16-bit PNG levels
DEEP_RANGE = 65535


def _path(config: DataConfig) -> Path:
    if config.data_path is None:
        raise DataError(
            "data set 'array' is read from one file: pass --data-path FILE (or set "
            "data.data_path), a .npy array or an .npz with train/test arrays"
        )
    path = Path(config.data_path).expanduser()
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"data file '{path}' must be a .npy or .npz file")
    return path


def _split_one(config: DataConfig, name: str, array, labels=None) -> Dataset:
    index = {s: np.sort(i) for s, i in seeded_split(len(array), config).items()}
    split_labels = {}
    if labels is not None:
        split_labels = {s: labels[index[s]] for s in SPLITS}
    return from_splits(name, {s: array for s in SPLITS}, split_labels, index)


@DATASETS.register("array")
def load_array(config: DataConfig) -> Dataset:
    """Your own array: --data-path FILE, a .npy or an .npz (train/test[/valid] or one array).

    One array is split into train/valid/test by data.split_seed and the fractions."""
    path = _path(config)
    name = f"'{path.name}'"
    if path.suffix == ".npy":
        return _split_one(config, name, read_npy(path, name))
    archive = read_npz(path, name)
    keys = list(archive)
    if len(keys) == 1:
        return _split_one(config, name, archive[keys[0]])
    known = set(SPLITS) | {f"{s}_labels" for s in SPLITS}
    unknown = sorted(set(keys) - known)
    if unknown or not {"train", "test"} <= set(keys):
        raise DataError(
            f"{name} holds arrays {', '.join(keys)}; an .npz holds one array, or "
            f"'train' and 'test' (and optionally 'valid', 'train_labels', "
            f"'valid_labels', 'test_labels')"
        )
    for split in SPLITS:
        if f"{split}_labels" in keys and split not in keys:
            raise DataError(
                f"{name} holds '{split}_labels' but no '{split}' array for them to label"
            )
    splits = {s: archive.get(s) for s in SPLITS}
    labels = {s: archive.get(f"{s}_labels") for s in SPLITS}
    return from_splits(name, splits, labels, members=True)


load_array.reads_path = True  # --data-path names its file (config/checks.py)


def _image_files(directory: Path) -> Tuple[List[Path], List[int], List[str]]:
    def images(folder: Path) -> List[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    top = images(directory)
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    if top and folders:
        raise DataError(
            f"'{directory}' holds both image files and sub-folders; put every image in a "
            f"sub-folder (one per label) or none"
        )
    if top:
        return top, [], []
    files, labels = [], []
    for label, folder in enumerate(folders):
        inside = images(folder)
        files += inside
        labels += [label] * len(inside)
    if not files:
        raise DataError(
            f"'{directory}' holds no PNG/JPEG files (directly or one sub-folder deep)"
        )
    return files, labels, [f.name for f in folders]


@DATASETS.register("images")
def load_images(config: DataConfig) -> Dataset:
    """Your own images: PNG/JPEG files in --data-dir, sub-folders as labels.

    Resized to data.image_size = [H, W] (--image-size H W) when set."""
    if config.data_dir is None:
        raise DataError(
            "data set 'images' is read from a folder: pass --data-dir DIR holding PNG/JPEG "
            "files (or one sub-folder of them per label)"
        )
    directory = Path(config.data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"image folder '{directory}' does not exist")
    files, labels, folders = _image_files(directory)
    headers = [_image_header(path) for path in files]  # (height, width, mode)
    colour = not all(mode in GREY_MODES for _, _, mode in headers)
    if config.image_size is not None:
        height, width = config.image_size
    else:
        sizes = Counter(f"{h}x{w}" for h, w, _ in headers)
        if len(sizes) > 1:
            found = ", ".join(f"{size} ({n} files)" for size, n in sizes.most_common())
            raise DataError(
                f"the images in '{directory}' differ in size (height x width): {found}; "
                f"set data.image_size = [H, W] (--set data.image_size=[28,28]) to resize "
                f"them"
            )
        height, width = headers[0][:2]
    channels = 3 if colour else 1
    values = len(files) * channels * height * width
    require_memory(
        8 * values + 4 * max(h * w * 4 for h, w, _ in headers),
        f"the {len(files)} images in '{directory}' at {height} x {width} pixels with "
        f"{channels} channel{'s' if colour else ''} make {values:.3g} values (float32, and "
        f"their rows)",
        "use a smaller data.image_size (--image-size H W)",
        DataError,
    )
    shape = (len(files), height, width, 3) if colour else (len(files), height, width)
    array = np.empty(shape, dtype=np.float32)
    for i, path in enumerate(files):
        array[i] = _read_image(path, (height, width), colour)
    label_array = np.asarray(labels) if labels else None
    dataset = _split_one(config, f"'{directory}'", array, label_array)
    dataset.label_names = tuple(folders) or None  # label k is folder folders[k]
    return dataset


def _image_header(path: Path) -> Tuple[int, int, str]:
    """(height, width, mode) from an image file's header, nothing decoded; a header that
    claims more pixels than Pillow allows (a decompression bomb) is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.height, image.width, image.mode
    except Image.DecompressionBombError:
        width, height = _claimed_size(path)
        raise DataError(
            f"image '{path}' claims {width} x {height} = {width * height} pixels, more "
            f"than Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS} for one image (a "
            f"decompression bomb?); remove the file"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image '{path}': {err}") from None


def _claimed_size(path: Path) -> Tuple[int, int]:
    """The size a refused header claims, read with Pillow's limit lifted (header only)."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return image.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _read_image(path: Path, size: Tuple[int, int], colour: bool) -> np.ndarray:
    """One image as float32 in [0, 1], (H, W) grey or (H, W, 3) colour, resized to ``size``
    (H, W) when it differs: 8-bit levels over 255, 16-bit levels (Pillow's ``I;16`` and
    ``I`` modes) over 65535, never clipped to 8 bits."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the size was checked against memory
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                deep = image.mode in DEEP_MODES
                image = image.convert("F" if deep else ("RGB" if colour else "L"))
                if image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image '{path}': {err}") from None
    pixels = pixels / np.float32(DEEP_RANGE if deep else 255)
    if colour and pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels
