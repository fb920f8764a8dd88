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

from collections import Counter
from pathlib import Path
from typing import List, Tuple

import numpy as np

from pyro_vae.config import DataConfig
from pyro_vae.data.dataset import Dataset, from_splits, seeded_split
from pyro_vae.errors import DataError
from pyro_vae.registry import DATASETS

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


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
    try:
        if path.suffix == ".npy":
            return _split_one(config, name, np.load(path, mmap_mode="r"))
        with np.load(path) as archive:
            keys = list(archive.files)
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
            splits = {s: archive[s] if s in keys else None for s in SPLITS}
            labels = {
                s: archive[f"{s}_labels"] if f"{s}_labels" in keys else None
                for s in SPLITS
            }
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"cannot read {name} as a NumPy file: {err}") from None
    return from_splits(name, splits, labels)


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
    from PIL import Image, UnidentifiedImageError

    if config.data_dir is None:
        raise DataError(
            "data set 'images' is read from a folder: pass --data-dir DIR holding PNG/JPEG "
            "files (or one sub-folder of them per label)"
        )
    directory = Path(config.data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"image folder '{directory}' does not exist")
    files, labels, folders = _image_files(directory)
    opened = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append(image)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image '{path}': {err}") from None
    mode = "L" if all(im.mode in GREY_MODES for im in opened) else "RGB"
    if config.image_size is not None:
        height, width = config.image_size
        opened = [
            im.resize((width, height), Image.Resampling.BILINEAR) for im in opened
        ]
    sizes = Counter(f"{im.height}x{im.width}" for im in opened)
    if len(sizes) > 1:
        found = ", ".join(f"{size} ({n} files)" for size, n in sizes.most_common())
        raise DataError(
            f"the images in '{directory}' differ in size (height x width): {found}; set "
            f"data.image_size = [H, W] (--set data.image_size=[28,28]) to resize them"
        )
    array = np.stack([np.asarray(im.convert(mode), dtype=np.uint8) for im in opened])
    label_array = np.asarray(labels) if labels else None
    dataset = _split_one(config, f"'{directory}'", array, label_array)
    dataset.label_names = tuple(folders) or None  # label k is folder folders[k]
    return dataset
