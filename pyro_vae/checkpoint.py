"""Checkpoints: atomic writes, and everything needed to continue a run exactly.

A checkpoint is a dict of tensors and plain Python values (loadable with
``torch.load(weights_only=True)``): the module's ``state_dict`` (parameters and buffers), the
optimizer's state, the epoch, the metrics so far, the resolved config, and the RNG states of
torch (CPU and CUDA), NumPy and Python. A run under torchrun also saves ``rng_ranks``, every
rank's RNG state in rank order (``rng`` is rank 0's), which ``distributed.restore_rng`` gives
back to each rank on resume. Tensors are saved on the CPU, so a checkpoint written on a GPU
loads on a machine without one.
"""

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from .errors import TrainingError

PathLike = Union[str, Path]


def atomic_write_bytes(path: PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``:
    a crash at any point leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save(path: PathLike, state: Dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(_to_cpu(state), f))


def load(
    path: PathLike, map_location: Union[str, torch.device] = "cpu"
) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(
            f"no checkpoint at '{path}': train first (pyro-vae train --out DIR)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt file
        raise TrainingError(
            f"checkpoint '{path}' cannot be read ({err}); it is not a pyro-vae checkpoint or is corrupt"
        ) from None


def rng_state() -> Dict[str, Any]:
    """The state of every random number generator a run draws from."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {
            "version": version,
            "state": list(py_state),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
