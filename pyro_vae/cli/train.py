"""``pyro-vae train``: the train command, its flag shortcuts and ``--set`` overrides.

Every rank of a torchrun job trains; only rank 0 holds the run directory's lock, writes,
prints and plots. The heavy modules (torch, Pyro) are imported inside the functions, so
``pyro-vae --help`` stays fast.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

from pyro_vae import config as cfg
from pyro_vae.config import check_size
from pyro_vae.errors import ConfigError

# flag -> config key, for the train command's shortcuts
FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "data_path": "data.data_path",
    "image_size": "data.image_size",
    "family": "model.family",
    "likelihood": "likelihood.name",
    "prior": "prior.name",
    "guide": "guide.name",
    "network": "network.name",
    "elbo": "objective.name",
    "num_particles": "objective.num_particles",
    "latent_dim": "model.latent_dim",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "lr_decay": "train.lr_decay",
    "beta": "train.beta",
    "kl_warmup_epochs": "train.kl_warmup_epochs",
    "kl_schedule": "train.kl_schedule",
    "kl_cycles": "train.kl_cycles",
    "kl_cycle_ratio": "train.kl_cycle_ratio",
    "free_bits": "train.free_bits",
    "reconstruction_weight": "train.reconstruction_weight",
    "device": "train.device",
    "seed": "train.seed",
    "tensorboard": "train.tensorboard",
    "patience": "train.patience",
    "eval_every": "train.eval_every",
    "eval_rows": "train.eval_rows",
    "labels": "model.labels",
}


def overrides(args: argparse.Namespace) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for flag, key in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--set '{item}' must look like SECTION.KEY=VALUE, e.g. --set train.epochs=5"
            )
        out[key.strip()] = cfg.parse_value(value.strip())
    return out


def train(args: argparse.Namespace) -> None:
    """Train; under torchrun every rank trains, and only rank 0 holds the run directory's
    lock, writes, prints and plots."""
    from pyro_vae.run import distributed, rundir

    if args.resume and args.overwrite:
        raise ConfigError(
            "--resume continues the run in --out and --overwrite replaces it: pass one"
        )
    main = distributed.main_process()
    try:
        with rundir.opened(Path(args.out) if main else None) as run:
            _train(args, run, main)
    finally:
        distributed.teardown()


def _train(args: argparse.Namespace, run, main: bool) -> None:
    from pyro_vae import data, models
    from pyro_vae.data import record as data_record
    from pyro_vae.run import distributed, tensorboard
    from pyro_vae.run import train as training
    from pyro_vae.run.checkpoint import atomic_write_text
    from pyro_vae.run.epoch_line import epoch_line
    from pyro_vae.viz.figures import write_figures

    run_dir = Path(args.out)
    if distributed.restarted() and (run_dir / training.CHECKPOINT_FILE).is_file():
        # torchrun restarted the workers: continue from the last checkpoint
        args.resume = True
    if args.resume:
        saved = run_dir / training.CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(
                f"nothing to resume in '{run_dir}': it has no {training.CONFIG_FILE}"
            )
        config = cfg.load(args.config or str(saved), overrides(args))
        if run is not None:  # before loading data: a changed config, a finished run
            run.check_resume(config)
    else:
        if run is not None and run.has_run() and not args.overwrite:
            raise ConfigError(
                f"'{run_dir}' already holds a run; pass --resume to continue it, --overwrite to "
                f"replace it, or another --out"
            )
        config = cfg.load(args.config, overrides(args))
    dataset = data.load(config.data)
    check_size(config, dataset.data_dim)
    vae = models.build(config, dataset.shape)
    say = print if main else lambda *a, **k: None
    say(
        f"training on {dataset.name}: {len(dataset.train)} train / {len(dataset.test)} test images; "
        f"prior={config.prior.name} guide={config.guide.name} likelihood={config.likelihood.name} "
        f"objective={config.objective.name} data.binarize={str(config.data.binarize).lower()}; "
        f"run directory {run_dir}"
    )

    def on_epoch(row: dict) -> None:
        print(epoch_line(row, config.train.epochs), flush=True)
        if "stopped" in row:
            print(f"stopped early after epoch {row['epoch']}: {row['stopped']}")

    args.fitting = True  # from here on a Ctrl-C reports what the run directory keeps
    metrics = training.fit(
        vae,
        dataset,
        config,
        run_dir,
        resume=args.resume,
        progress=main and not args.no_progress and sys.stderr.isatty(),
        on_epoch=on_epoch,
    )
    if not main:
        return
    data_record.write(run_dir, config.data, dataset)
    for (
        name,
        record,
    ) in vae.records().items():  # e.g. labels.json: which rows kept labels
        atomic_write_text(run_dir / f"{name}.json", json.dumps(record))
    for row in metrics[-1:]:
        print(
            f"epoch {row['epoch']}: train ELBO {row['train_elbo']:.2f}, test ELBO {row['test_elbo']:.2f} "
            f"(reconstruction {row['reconstruction']:.2f}, KL {row['kl']:.2f}) nats per data point"
        )
    device = next(vae.parameters()).device
    written = write_figures(
        vae,
        vae.rows(dataset, "test").to(device),
        dataset.shape,
        run_dir,
        dataset.test_labels,
        metrics,
        dataset.label_names,
    )
    tensorboard.log_figures(config, run_dir, written, metrics[-1]["epoch"])
    print(
        f"wrote {run_dir}/: config.toml, metrics.jsonl, checkpoint.pt, data.json, "
        "environment.json, " + ", ".join(p.name for p in written)
    )
