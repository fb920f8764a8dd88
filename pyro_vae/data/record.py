"""Where a run's data came from: ``data.json`` in the run directory.

It records the data set's name, its path (or "arrays given from Python, not stored"), one
example's shape and the split sizes, so that a run can be rebuilt without its data and
``pyro-vae evaluate`` can say when the data cannot be reloaded instead of guessing.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from pyro_vae.config import DataConfig
from pyro_vae.data.dataset import FROM_PYTHON, Dataset
from pyro_vae.errors import DataError

DATA_FILE = "data.json"


def describe(config: DataConfig, dataset: Dataset) -> Dict[str, Any]:
    """What a run directory records about its data (``data.json``): the data set's name, where
    it was read from, and one example's shape, so the run can be rebuilt without its data.
    """
    if config.dataset == FROM_PYTHON:
        source = "arrays given from Python, not stored"
    else:
        where = config.data_path or config.data_dir
        source = f"data set '{config.dataset}'" + (
            f" read from {where}" if where else ""
        )
    return {
        "dataset": config.dataset,
        "source": source,
        "data_dir": config.data_dir,
        "data_path": config.data_path,
        "shape": list(dataset.shape),
        "image_shape": list(dataset.image_shape),
        "sizes": {
            s: len(dataset.split(s))
            for s in ("train", "valid", "test")
            if getattr(dataset, s) is not None
        },
    }


def write(run_dir: Path, config: DataConfig, dataset: Dataset) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / DATA_FILE).write_text(
        json.dumps(describe(config, dataset), indent=2) + "\n"
    )


def read(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The run's ``data.json``, or None for runs written before it existed."""
    path = Path(run_dir) / DATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_shape(run_dir: Path, dataset: Optional[Dataset]) -> Tuple[int, ...]:
    """One example's shape for a run: from its ``data.json``, else from its data set."""
    record = read(run_dir)
    if record is not None:
        return tuple(record["shape"])
    if dataset is None:
        raise DataError(f"'{run_dir}' has no {DATA_FILE} and its data were not loaded")
    return tuple(dataset.shape)
