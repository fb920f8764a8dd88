"""CPU seconds per training epoch of a configuration, measured on a sample of its SVI steps.

    python benchmarks/epoch_cost.py --config mnist --steps 100 --set model.family=hierarchical ...

Builds the configuration's model, takes ``--warmup`` SVI steps (compilation, allocation), then
times ``--steps`` steps (``make_svi`` + ``train_step``, as ``fit`` runs them, on consecutive
mini-batches of the training set at KL weight 1) with ``time.process_time`` on one thread, and
scales to an epoch: steps per epoch = ceil(N_train / batch_size). Not counted: the per-epoch
ELBO scoring and the checkpoint (about 1.5% of an epoch on MNIST, README "Per epoch").
Prints one JSON object.
"""

import argparse
import json
import math
import time

import pyro
import torch

from pyro_vae import config as cfg
from pyro_vae import data as data_mod
from pyro_vae.cli.app import overrides as cli_overrides
from pyro_vae.models import build
from pyro_vae.run.svi import make_svi
from pyro_vae.run.train import train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    flags = argparse.Namespace(
        set=args.set, data_dir=args.data_dir, epochs=None, device="cpu"
    )
    config = cfg.load(args.config, cli_overrides(flags))
    dataset = data_mod.load(config.data)
    pyro.set_rng_seed(config.train.seed)
    pyro.clear_param_store()
    vae = build(config, dataset.shape)
    svi, _ = make_svi(vae, config)
    b = config.train.batch_size
    train = dataset.train
    batches = [train[i * b : (i + 1) * b] for i in range(args.warmup + args.steps)]
    with pyro.validation_enabled(config.train.validate):
        for x in batches[: args.warmup]:
            train_step(svi, x, 1.0)
        began = time.process_time()
        for x in batches[args.warmup :]:
            train_step(svi, x, 1.0)
        seconds = (time.process_time() - began) / args.steps
    per_epoch = math.ceil(len(train) / b)
    print(
        json.dumps(
            {
                "cpu_seconds_per_step": seconds,
                "steps_per_epoch": per_epoch,
                "cpu_seconds_per_epoch": seconds * per_epoch,
                "steps_timed": args.steps,
                "threads": torch.get_num_threads(),
                "sets": args.set,
            }
        )
    )


if __name__ == "__main__":
    main()
