"""Checkpoints: atomic writes, and everything needed to continue a run exactly.

A checkpoint is a dict of tensors and plain Python values (loadable with
``torch.load(weights_only=True)``): the module's ``state_dict`` (parameters and buffers), the
optimizer's state, the epoch, the metrics so far, the resolved config, and the RNG states of
torch (CPU and CUDA), NumPy and Python. A run under torchrun also saves ``rng_ranks``, every
rank's RNG state in rank order (``rng`` is rank 0's), which ``distributed.restore_rng`` gives
back to each rank on resume. Tensors are saved on the CPU, so a checkpoint written on a GPU
loads on a machine without one.
"""

import errno
import io
import os
import pickle
import random
import signal
import tempfile
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import numpy as np
import torch

from pyro_vae.errors import ConfigError, TrainingError

PathLike = Union[str, Path]


class StorageError(TrainingError):
    """The file system refused a write (full, read-only, no permission): an environment
    fault rather than bad input, so the CLI exits with status 1."""

    exit_status = 1


TMP_SUFFIX = ".tmp"  # every temporary file is named .NAME.XXXX.tmp beside NAME
FAULT_ENV = "PYRO_VAE_FAULT"  # test hook: "POINT" or "POINT:N" kills the process there


def fault_point(name: str) -> None:
    """Test hook for fault injection: when ``$PYRO_VAE_FAULT`` names this point (``name`` or
    ``name:N`` for its N-th visit in this process), the process kills itself with SIGKILL.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _VISITS[name] = _VISITS.get(name, 0) + 1
    if _VISITS[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_VISITS: Dict[str, int] = {}


def storage_error(path: PathLike, err: OSError) -> StorageError:
    """One line that says why ``path`` could not be written and what to do."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full (or the quota is used up)"
        fix = "free some space"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = f"the location is not writable ({os.strerror(err.errno)})"
        fix = "choose a writable directory"
    else:
        why = err.strerror or str(err)
        fix = "check the file system"
    return StorageError(f"cannot write '{path}': {why}; {fix}")


def atomic_write_bytes(path: PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``:
    a crash at any point leaves either the old file or the new one, never a torn one, and a
    failed write (a full disk) removes its temporary file and raises :class:`StorageError`.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX
        )
    except OSError as err:
        raise storage_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("tmp-written")
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None:
            raise storage_error(path, err) from None
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
    """Serialize ``state`` in memory, then write the bytes atomically: the file system's own
    error (``ENOSPC``) reaches the caller instead of torch's zip writer's RuntimeError.
    """
    buffer = io.BytesIO()
    torch.save(_to_cpu(state), buffer)
    atomic_write_bytes(path, lambda f: f.write(buffer.getbuffer()))


ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
KEYS = {
    "epoch": int,
    "model": dict,
    "optimizer": dict,
    "rng": dict,
    "metrics": list,
    "config": dict,
}


def load(
    path: PathLike,
    map_location: Union[str, torch.device] = "cpu",
    need: Sequence[str] = (),
) -> Dict[str, Any]:
    """Load a pyro-vae checkpoint with ``weights_only=True`` and check its structure: a dict
    with the keys in ``need`` (of the types in :data:`KEYS`; a run's checkpoint has them
    all), the model state holding only tensors. Anything else (a foreign pickle, random
    bytes, a bare tensor) is a one-line :class:`TrainingError` naming the file; nothing in
    the file is ever executed."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(
            f"no checkpoint at '{path}': train first (pyro-vae train --out DIR)"
        )
    foreign = f"'{path}' is not a pyro-vae checkpoint"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise StorageError(f"cannot read '{path}': {err.strerror}") from None
    if head != ZIP_MAGIC:
        raise TrainingError(
            f"{foreign}: it is not a file written by torch.save (wrong header "
            f"{head!r}); point at a run directory written by pyro-vae train"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            f"{foreign}: it holds Python objects other than tensors and plain values, "
            f"so it was not loaded (loading it could run code)"
        ) from None
    except Exception as err:  # torch raises several types for a torn file
        text = str(err).strip() or type(err).__name__
        first = text.splitlines()[0].split(". ")[0]  # torch's first sentence, no advice
        raise TrainingError(
            f"checkpoint '{path}' is truncated or corrupt ({first}); resume from a copy or "
            f"train again"
        ) from None
    check_structure(path, state, need)
    return state


def check_structure(path: PathLike, state: Any, need: Sequence[str]) -> None:
    """Refuse a loaded object that is not a checkpoint dict with the keys in ``need``."""
    foreign = f"'{path}' is not a pyro-vae checkpoint"
    if not isinstance(state, dict):
        raise TrainingError(
            f"{foreign}: it holds a {type(state).__name__}, not a dict of the run's state"
        )
    missing = [k for k in need if k not in state]
    if missing:
        raise TrainingError(
            f"{foreign}: it lacks {', '.join(repr(k) for k in missing)} (a pyro-vae "
            f"checkpoint holds {', '.join(KEYS)})"
        )
    for key in need:
        if not isinstance(state[key], KEYS[key]) or isinstance(state[key], bool):
            raise TrainingError(
                f"{foreign}: its '{key}' is a {type(state[key]).__name__}, expected a "
                f"{KEYS[key].__name__}"
            )
    if "model" in need and not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state["model"].items()
    ):
        raise TrainingError(
            f"{foreign}: its 'model' is not a state dict of named tensors"
        )


def check_fits(path: PathLike, model_state: Dict, expected: Dict) -> None:
    """Refuse a model state whose parameter names or shapes differ from ``expected`` (the
    state dict of the VAE that the config builds), naming the first difference."""
    missing = [k for k in expected if k not in model_state]
    extra = [k for k in model_state if k not in expected]
    where = f"checkpoint '{path}' does not fit its config"
    if missing or extra:
        what = (
            f"it lacks parameter '{missing[0]}'"
            if missing
            else f"it has parameter '{extra[0]}' that the config has no place for"
        )
        raise TrainingError(
            f"{where}: {what} ({len(missing)} missing, {len(extra)} unexpected); the "
            f"prior, guide or likelihood differs from the one trained"
        )
    for key, tensor in expected.items():
        got = tuple(model_state[key].shape)
        if got != tuple(tensor.shape):
            raise TrainingError(
                f"{where}: parameter '{key}' has shape {got} in the checkpoint but "
                f"{tuple(tensor.shape)} for the config (model sizes or the data's width "
                f"changed after training)"
            )


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


def make_directory(path: Path) -> None:
    """``mkdir -p`` with one-line errors for a file in the way or a read-only location."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"run directory '{path}' is a file; choose a directory for --out"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in path.parents if p.exists())
        raise ConfigError(
            f"run directory '{path}' cannot be made: '{blocker}' is a file; choose a "
            f"directory for --out"
        ) from None
    except OSError as err:
        raise storage_error(path, err) from None


def check_writable(directory: Path) -> None:
    """Refuse a directory that cannot take a new file, before minutes of computing."""
    try:
        probe = directory / f".write-test.{os.getpid()}{TMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise storage_error(directory, err) from None
