"""Rebuild a trained run from its run directory: the config it saved, the model its checkpoint
holds, and its data reloaded from where the config says."""

import dataclasses
import math
from pathlib import Path
from typing import Optional, Tuple

from pyro_vae.config import Config, check_size, from_dict
from pyro_vae.data import Dataset, load
from pyro_vae.data.record import read as read_data_record
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.models import build
from pyro_vae.models.vae import VAE
from pyro_vae.process import resolve_device
from pyro_vae.run import checkpoint, rundir
from pyro_vae.run.layout import BEST_FILE, CHECKPOINT_FILE


def load_run(
    run_dir: Path,
    device: str = "auto",
    best: bool = False,
    data_dir: Optional[str] = None,
    need_data: bool = True,
) -> Tuple[Config, VAE, Optional[Dataset]]:
    """Rebuild a run's VAE from its last checkpoint, or with ``best`` from the epoch with the
    highest validation ELBO (data sets with a validation split); the config is the saved one,
    with the data read from ``data_dir`` when given (the files moved since training).

    The data set is reloaded from where the run's config says; a run whose data cannot be
    reloaded (arrays given from Python) raises :class:`DataError`, unless ``need_data`` is
    False: then the data set is ``None`` and the network's shape comes from ``data.json``.

    The checkpoint is checked before use: its structure, its config, and that every parameter
    has the shape the config builds (one-line :class:`TrainingError` naming the file).
    """
    dev = resolve_device(device)
    rundir.settle(run_dir)  # a crash may have left best.pt / metrics.jsonl behind
    path = Path(run_dir) / (BEST_FILE if best else CHECKPOINT_FILE)
    if best and not path.is_file() and (Path(run_dir) / CHECKPOINT_FILE).is_file():
        raise TrainingError(
            f"'{run_dir}' has no {BEST_FILE}: it is written only for data sets with a "
            f"validation split; evaluate the last epoch without --best"
        )
    state = checkpoint.load(path, map_location=dev, need=("model", "config"))
    try:
        config = from_dict(state["config"])
    except ConfigError as err:
        raise TrainingError(
            f"checkpoint '{path}' holds an invalid config: {err}"
        ) from None
    if data_dir is not None:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, data_dir=data_dir)
        )
    record = read_data_record(Path(run_dir))
    data = load(config.data) if need_data or record is None else None
    shape = data.shape if data is not None else tuple(record["shape"])
    check_size(config, math.prod(shape))
    vae = build(config, shape)
    checkpoint.check_fits(path, state["model"], vae.state_dict())
    vae.load_state_dict(state["model"])
    return config, vae.to(dev).eval(), data
