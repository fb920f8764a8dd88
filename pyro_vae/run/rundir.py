"""The run directory: its layout, its lock, the atomic commit of an epoch, recovery after a
crash, and the checks that decide whether a run may be resumed.

A run directory holds

* ``checkpoint.pt``: the commit. Everything an epoch produced (model, optimizer, RNG states,
  *all* metrics rows, the config) is in it, and it is replaced atomically (temporary file,
  ``fsync``, rename), so after a crash it holds the last finished epoch or nothing.
* ``metrics.jsonl`` and ``best.pt``: derived from ``checkpoint.pt`` (the metrics rows; a copy
  of the checkpoint of the epoch with the highest validation ELBO). They are written after the
  commit, and every start rewrites them from it, so a kill between the commit and them
  leaves nothing stale for longer than until the next command.
* ``config.toml``: the run's resolved config, written when a run starts or resumes.
* ``.lock``: ``flock``-ed by the one process that writes the run (a second gets an error),
  and deleted by it when it lets go, so a finished run directory has none.
* ``.replaced/``: the previous run while a new run (``--overwrite``) has not committed its
  first epoch. The first commit deletes it; a start that finds it without a checkpoint
  deletes the new run's files and puts the previous run back. ``.replaced.partial/`` holds
  the previous run's files while they move (aside, or back): a start moves them back.

Temporary files (``.NAME.XXXX.tmp``) left by a killed process are deleted on the next start.
"""

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch

from pyro_vae.config import Config, differences, from_dict
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.run import checkpoint
from pyro_vae.run.checkpoint import StorageError, fault_point
from pyro_vae.run.layout import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOCK_FILE,
    METRICS_FILE,
    REPLACED,
    REPLACING,
    RUN_FILES,
)
from pyro_vae.run.lock import lock, unlock

PathLike = Union[str, Path]
# config keys that may differ between a checkpoint and the run that resumes it
RESUMABLE = ("train.epochs", "data.data_dir", "train.tensorboard", "train.patience")

_HELD: Dict[Path, "RunDir"] = {}  # run directories this process holds locked


class RunDir:
    """A run directory that this process holds locked (make one with :func:`opened`)."""

    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self.lock_fd = lock_fd

    @classmethod
    def acquire(cls, path: PathLike, create: bool = True) -> "RunDir":
        """Make ``path`` (with ``create``), take its lock, and clean up after a crash."""
        path = Path(path)
        if create:
            checkpoint.make_directory(path)
        fd = lock(path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        run = cls(path, fd)
        try:
            run.recover()
        except BaseException:
            run.release()
            raise
        return run

    def release(self) -> None:
        """Let go of the run directory (its ``.lock`` is deleted: see ``run.lock``)."""
        unlock(self.path, self.lock_fd)

    # -- recovery ---------------------------------------------------------------------
    def entries(self) -> List[Path]:
        return sorted(p for p in self.path.iterdir() if p.name != LOCK_FILE)

    def recover(self) -> None:
        """Delete temporary files; finish or undo a replacement that a crash interrupted."""
        for p in self.entries():
            if p.name.startswith(".") and p.name.endswith(checkpoint.TMP_SUFFIX):
                p.unlink(missing_ok=True)
        partial, replaced = self.path / REPLACING, self.path / REPLACED
        if replaced.is_dir():
            if (self.path / CHECKPOINT_FILE).is_file():  # the new run has committed
                shutil.rmtree(replaced)
            else:  # killed before the new run's first commit: the old run comes back
                for name in RUN_FILES:  # the new run's files, none of them committed
                    _remove(self.path / name)
                replaced.rename(partial)  # from here on, moving back deletes nothing
        if partial.is_dir():  # the old run's files, some of them already moved
            _move_all(partial, self.path)
            partial.rmdir()

    def repair(self) -> Optional[Dict[str, Any]]:
        """Rewrite ``metrics.jsonl`` and ``best.pt`` from the committed checkpoint (a kill
        between the commit and them leaves them one epoch behind); returns the checkpoint.
        """
        path = self.path / CHECKPOINT_FILE
        if not path.is_file():
            return None
        state = checkpoint.load(path, need=tuple(checkpoint.KEYS))
        self._write_derived(state, path, check_best=True)
        return state

    def has_run(self) -> bool:
        return (self.path / CHECKPOINT_FILE).exists()

    def move_aside(self) -> None:
        """Move the previous run's files (:data:`RUN_FILES`) into ``.replaced/``; they are
        deleted at the new run's first commit."""
        entries = [self.path / n for n in RUN_FILES if (self.path / n).exists()]
        if not entries:
            return
        partial = self.path / REPLACING
        partial.mkdir()
        for p in entries:
            p.rename(partial / p.name)
            fault_point("moving-aside")
        partial.rename(self.path / REPLACED)

    # -- a run's life -----------------------------------------------------------------
    def start(
        self, config: Config, resume: bool, expected_model: Dict[str, torch.Tensor]
    ) -> Optional[Dict[str, Any]]:
        """Begin a run: with ``resume`` the checkpoint to continue from (checked against
        ``config`` and the model's shapes), else move any previous run aside. Writes
        ``config.toml``."""
        if resume:
            state = self.check_resume(config)
            checkpoint.check_fits(
                self.path / CHECKPOINT_FILE, state["model"], expected_model
            )
        else:
            state = None
            self.move_aside()
        checkpoint.atomic_write_text(self.path / CONFIG_FILE, config.to_toml())
        fault_point("config-written")
        return state

    def check_resume(self, config: Config) -> Dict[str, Any]:
        """The checkpoint to resume with ``config`` (repaired first); refuses a changed
        config (other than :data:`RESUMABLE`) and a run that has finished its epochs."""
        path = self.path / CHECKPOINT_FILE
        if not path.is_file():
            raise TrainingError(
                f"no checkpoint at '{path}': nothing to resume (the run stopped before its "
                f"first epoch finished); start it again without --resume"
            )
        state = self.repair()
        try:  # keys added to the config since the run was written take their defaults
            saved = from_dict(state["config"]).to_dict()
        except ConfigError as err:
            raise TrainingError(
                f"cannot resume '{self.path}': its checkpoint holds an invalid config: {err}"
            ) from None
        changed = differences(saved, config.to_dict(), ignore=RESUMABLE)
        if changed:
            raise TrainingError(
                f"cannot resume '{self.path}': the config differs from the checkpoint's in "
                f"{', '.join(changed)}; only {', '.join(RESUMABLE[:-1])} and "
                f"{RESUMABLE[-1]} may change when resuming (start a new run with another "
                f"--out for other changes)"
            )
        if state["epoch"] >= config.train.epochs:
            raise TrainingError(
                f"the run in '{self.path}' already finished {state['epoch']} epochs (its "
                f"files are consistent); pass a larger --epochs to train further"
            )
        return state

    def commit(self, state: Dict[str, Any]) -> None:
        """Commit one epoch: replace ``checkpoint.pt`` atomically, then derive the rest."""
        fault_point("before-commit")
        path = self.path / CHECKPOINT_FILE
        try:
            checkpoint.save(path, state)
        except StorageError as err:  # the previous commit is untouched
            kept = (
                f", then resume with --resume (epoch {state['epoch'] - 1}'s checkpoint "
                f"is intact)"
                if path.exists()
                else " (no epoch was saved)"
            )
            raise StorageError(f"{err}{kept}") from None
        fault_point("committed")
        if (self.path / REPLACED).exists():
            shutil.rmtree(self.path / REPLACED)
        self._write_derived(state, path, check_best=False)

    def _write_derived(self, state: Dict, path: Path, check_best: bool) -> None:
        best = best_epoch(state["metrics"])
        best_path = self.path / BEST_FILE
        if best == state["epoch"] and (
            not check_best
            or not best_path.is_file()
            or _epoch_of(best_path) != state["epoch"]
        ):
            data = path.read_bytes()
            checkpoint.atomic_write_bytes(best_path, lambda f: f.write(data))
            fault_point("best-written")
        text = "".join(_json(row) for row in state["metrics"])
        metrics = self.path / METRICS_FILE  # compared as bytes: any damage is rewritten
        if (
            not check_best
            or not metrics.is_file()
            or metrics.read_bytes() != text.encode()
        ):
            checkpoint.atomic_write_text(metrics, text)
        fault_point("metrics-written")


@contextmanager
def opened(path: Optional[PathLike], create: bool = True) -> Iterator[Optional[RunDir]]:
    """Hold ``path`` locked for the ``with`` block (re-entrant within one process); ``None``
    for no run directory. A directory this call made is removed again if it is still empty.
    """
    if path is None:
        yield None
        return
    key = Path(path).resolve()
    if key in _HELD:
        yield _HELD[key]
        return
    made = create and not Path(path).exists()
    run = RunDir.acquire(path, create)
    _HELD[key] = run
    try:
        yield run
    finally:
        del _HELD[key]
        run.release()
        if (
            made
        ):  # a run refused before writing anything leaves no empty directory behind
            _remove_if_empty(Path(path))


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # refuses a directory that holds anything
    except OSError:
        pass


def settle(path: PathLike) -> None:
    """Recover and repair a run directory that no process holds, before reading it (evaluate
    and sample call this); does nothing when it is in use or not writable."""
    path = Path(path)
    if not path.is_dir() or Path(path).resolve() in _HELD:
        return
    try:
        with opened(path, create=False) as run:
            run.repair()
    except (StorageError, TrainingError):
        return


def best_epoch(metrics: List[Dict]) -> Optional[int]:
    """The last epoch with the highest validation ELBO (None without a validation split)."""
    rows = [m for m in metrics if not math.isnan(m.get("valid_elbo", math.nan))]
    if not rows:
        return None
    top = max(m["valid_elbo"] for m in rows)
    return [m["epoch"] for m in rows if m["valid_elbo"] >= top][-1]


def _epoch_of(path: Path) -> Optional[int]:
    try:
        return checkpoint.load(path, need=("epoch",))["epoch"]
    except TrainingError:
        return None


def _json(row: Dict) -> str:
    return json.dumps(row) + "\n"


def _move_all(source: Path, target: Path) -> None:
    """Move every entry of ``source`` into ``target``, ``checkpoint.pt`` last (its presence
    marks a committed run, so it must not arrive before the files that belong to it)."""
    for p in sorted(source.iterdir(), key=lambda p: p.name == CHECKPOINT_FILE):
        if (target / p.name).exists():
            _remove(target / p.name)
        p.rename(target / p.name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
