"""TensorBoard logging of a run, through torch's own ``SummaryWriter``.

Switched on by ``[train] tensorboard = true`` (``pyro-vae train --tensorboard``), off by
default; it needs the optional ``tensorboard`` package (``pip install "pyro-vae[tensorboard]"``).
The log lives in the run directory's ``tensorboard/`` folder, so ``tensorboard --logdir runs/``
shows every run under ``runs/``:

* every number of every ``metrics.jsonl`` row as a scalar of the same name (``train_elbo``,
  ``test_elbo``, ``kl``, ...), at step = the epoch;
* the config, as hyper-parameters (the HPARAMS tab: one ``section.key`` column each, lists
  written as text) and as TOML text;
* the figures the run wrote (``elbo.png``, ``reconstructions.png``, ...) as images, at the
  last epoch's step.

The log is derived from the metrics rows, like ``metrics.jsonl``: each start of a run (new or
resumed) rewrites it from the rows the checkpoint holds, so a resumed run shows each epoch once
and a crash between the commit and the log leaves nothing stale. Under torchrun only the process
that writes the run directory logs.
"""

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.run.layout import TENSORBOARD_DIR

# the scalars the HPARAMS tab lists beside the config (those a run lacks stay empty)
HPARAM_METRICS = ("train_elbo", "test_elbo", "valid_elbo", "kl", "reconstruction")


def summary_writer() -> type:
    """torch's ``SummaryWriter`` class; a :class:`ConfigError` saying what to install when
    the ``tensorboard`` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.tensorboard = true needs the tensorboard package, which is not "
            "installed: pip install tensorboard (or pip install 'pyro-vae[tensorboard]'), "
            "or train without --tensorboard"
        ) from None
    return SummaryWriter


def hyperparameters(config: Config) -> Dict[str, Any]:
    """The config as flat ``section.key`` hyper-parameters: numbers and strings as they are,
    booleans as ``"true"``/``"false"`` (torch's writer would make them 1.0 and 0.0), lists and
    other values as their text."""
    flat: Dict[str, Any] = {}
    for section, values in config.to_dict().items():
        for key, value in values.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif not isinstance(value, (int, float, str)):
                value = str(value)
            flat[f"{section}.{key}"] = value
    return flat


class Board:
    """One run's TensorBoard log, open while the run trains (see :func:`session`)."""

    def __init__(self, config: Config):
        self.config = config
        self.writer = None
        self.logged = 0  # the last epoch whose row is in the log

    def start(self, run_dir: Optional[Path], metrics: List[Dict]) -> None:
        """Begin the log in ``run_dir/tensorboard`` (replacing any there) with the config and
        the rows trained so far; nothing when TensorBoard is off or this process does not
        write the run directory (``run_dir`` None)."""
        if not self.config.train.tensorboard or run_dir is None:
            return
        from torch.utils.tensorboard.summary import hparams

        log_dir = Path(run_dir) / TENSORBOARD_DIR
        shutil.rmtree(log_dir, ignore_errors=True)
        self.writer = summary_writer()(log_dir=str(log_dir))
        for summary in hparams(
            hyperparameters(self.config), {name: 0.0 for name in HPARAM_METRICS}
        ):
            self.writer.file_writer.add_summary(summary)
        toml = "\n".join("    " + line for line in self.config.to_toml().splitlines())
        self.writer.add_text("config", toml)
        self.log(metrics)

    def log(self, metrics: List[Dict]) -> None:
        """Write the rows of ``metrics`` not yet in the log, and flush them to disk."""
        if self.writer is None:
            return
        for row in metrics:
            if row["epoch"] > self.logged:
                for name, value in scalars(row).items():
                    self.writer.add_scalar(name, value, row["epoch"])
                self.logged = row["epoch"]
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextmanager
def session(config: Config, run_dir: Optional[Path]) -> Iterator[Board]:
    """A :class:`Board` for the ``with`` block, closed after it (also after an error). With
    TensorBoard on, a missing package or a missing run directory is refused here, before
    anything is trained."""
    if config.train.tensorboard:
        summary_writer()
        if run_dir is None:
            raise ConfigError(
                "train.tensorboard = true writes into the run directory: pass --out RUN_DIR "
                "(run_dir=... from Python), or switch tensorboard off"
            )
    board = Board(config)
    try:
        yield board
    finally:
        board.close()


def scalars(row: Dict) -> Dict[str, float]:
    """The numbers of a metrics row (all but ``epoch``), by their names."""
    return {
        name: float(value)
        for name, value in row.items()
        if name != "epoch"
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def log_figures(
    config: Config, run_dir: Path, paths: Sequence[Path], step: int
) -> None:
    """Add the PNG figures ``paths`` to the run's log as images named after their files, at
    ``step``; nothing when TensorBoard is off."""
    if not config.train.tensorboard:
        return
    from PIL import Image

    writer = summary_writer()(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))
    try:
        for path in paths:
            if Path(path).suffix.lower() != ".png":
                continue
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(Path(path).stem, pixels, step, dataformats="HWC")
    finally:
        writer.close()
