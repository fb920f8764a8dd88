"""``fit``: the SVI loop. It knows SVI, the data and the run directory, nothing else.

Each epoch: shuffle the training set (the order is a function of seed and epoch alone), take
SVI steps on full mini-batches (the remainder is dropped, reshuffled next epoch), stop at the
first non-finite loss, evaluate the ELBO's terms on fixed subsets of the test, validation and
training sets when the evaluation budget says so (epoch_eval.py), append a metrics row, commit
the epoch to the run directory (rundir.py: the layout, the lock, the atomic commit), hand the
row to ``on_epoch`` (the CLI prints it), and stop early after ``train.patience`` epochs without
a better validation ELBO (stopping.py); ``resume=True`` continues from it and, with the same seed
on the CPU, produces the same numbers as an uninterrupted run. What differs under torchrun
(each rank steps its shard of every global batch, sums are reduced, only rank 0 writes) is the
strategy's (``strategy.py``): the loop is the same for one process and for many.
"""

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_vae.config import Config
from pyro_vae.data import Dataset
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.infer.schedules import kl_weight, step_args
from pyro_vae.models.vae import VAE
from pyro_vae.process import resolve_device
from pyro_vae.run import (
    checkpoint,
    environment,
    epoch_eval,
    rundir,
    strategy,
    tensorboard,
)
from pyro_vae.run.layout import (  # noqa: F401  (re-exported: the run files)
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    METRICS_FILE,
)
from pyro_vae.run.stopping import stop_reason

EpochHook = Callable[
    [Dict], None
]  # called with each epoch's metrics row once committed


def learning_rate(config: Config, epoch: int) -> float:
    """The learning rate of (1-based) ``epoch``: ``lr * lr_decay ** (epoch - 1)``."""
    return config.train.lr * config.train.lr_decay ** (epoch - 1)


def train_step(
    svi: SVI, x: torch.Tensor, weight: float, reconstruction_weight: float = 1.0
) -> torch.Tensor:
    """One SVI step on the mini-batch ``x`` with KL weight ``weight`` and reconstruction weight
    ``reconstruction_weight`` (0-d tensors on ``x``'s device: ``schedules.step_args``); returns
    the loss."""
    return svi.step(*step_args(x, weight, reconstruction_weight))


def fit(
    vae: VAE,
    data: Dataset,
    config: Config,
    run_dir: Optional[Path] = None,
    resume: bool = False,
    progress: bool = False,
    on_epoch: Optional[EpochHook] = None,
) -> List[Dict]:
    """Train ``vae`` on ``data.train`` with SVI as ``config`` says; returns the metrics rows.

    ``on_epoch(row)`` is called in the main process after each epoch's commit with its
    metrics row (``epoch``, ``seconds``, ``train_objective``; on evaluated epochs also
    ``train_elbo``, ``test_elbo``, ``kl``, ``reconstruction``, ``valid_elbo``, bits/dim where
    they apply; ``stopped``, the reason, on an epoch after which early stopping ends the run).

    With ``run_dir``, holds it locked and commits each epoch there (``checkpoint.pt``, then
    ``metrics.jsonl`` and ``best.pt``); a new run moves a previous run's files aside until its
    first commit. With ``resume``, first loads the checkpoint and continues after its epoch.
    Under torchrun only rank 0 holds and writes the run directory (``strategy.py``).
    """
    run_dir = None if run_dir is None else Path(run_dir)
    if resume and run_dir is None:
        raise TrainingError("resuming needs the run directory: pass --out RUN_DIR")
    runner = strategy.start(resolve_device(config.train.device))
    with rundir.opened(run_dir if runner.is_main else None) as run:
        hook = on_epoch if runner.is_main else None
        with tensorboard.session(config, run_dir) as board:
            return _fit(
                vae, data, config, runner, run, run_dir, resume, progress, hook, board
            )


def _fit(
    vae: VAE,
    data: Dataset,
    config: Config,
    runner: strategy.SingleProcess,
    run: Optional[rundir.RunDir],
    run_dir: Optional[Path],
    resume: bool,
    progress: bool,
    on_epoch: Optional[EpochHook],
    board: tensorboard.Board,
) -> List[Dict]:
    t = config.train
    device = runner.device
    vae.check_data(data.train, "the training data")
    vae.check_data(data.test, "the test data")
    train_x = vae.training_rows(data).to(device)
    test_x = vae.rows(data, "test").to(device)  # with the columns a family appends
    valid_x = None if data.valid is None else vae.rows(data, "valid").to(device)
    if t.patience and valid_x is None:
        raise ConfigError(
            f"train.patience stops on the validation ELBO, and data set '{data.name}' has "
            f"no validation split: set data.valid_fraction (e.g. 0.1; array and images "
            f"data), use a data set with one, or set train.patience = 0"
        )
    vae.to(device)
    vae.release_params()
    svi, optimizer = runner.svi(vae, config)
    metrics: List[Dict] = []
    start_epoch = 1
    state = None if run is None else run.start(config, resume, vae.state_dict())
    runner.barrier()  # the main process has recovered or moved aside the previous run
    if resume and run is None:  # a process that does not write reads the commit
        state = checkpoint.load(run_dir / CHECKPOINT_FILE, map_location=device)
    if resume:
        vae.load_state_dict(state["model"])
        optimizer.set_state(state["optimizer"])
        runner.restore_rng(state, t.seed)
        metrics, start_epoch = state["metrics"], state["epoch"] + 1
        _check_not_stopped(metrics, t.patience, run_dir)
    else:
        runner.seed(t.seed)
    if run is not None:
        environment.record(run.path, device, start_epoch)
    board.start(run_dir if run is not None else None, metrics)

    n = train_x.shape[0]
    batch = min(t.batch_size, n)
    # the family orders each epoch's rows (a shuffle, or its own batches); the count is fixed
    steps_per_epoch = len(vae.epoch_order(t.seed, start_epoch, n, batch)) // batch
    analytic_kl = (
        vae.kl_is_analytic(test_x) if config.objective.name == "meanfield" else None
    )
    scoring = epoch_eval.plan(vae, config, vae.rows(data, "train"), test_x, valid_x, n)
    hint = _binarized_hint(config, vae)
    with pyro.validation_enabled(t.validate):
        for epoch in range(start_epoch, t.epochs + 1):
            began = time.perf_counter()
            order = vae.epoch_order(t.seed, epoch, n, batch).to(device)
            lr = learning_rate(config, epoch)
            optimizer.set_lr(lr)
            losses = torch.zeros(steps_per_epoch, dtype=torch.float64, device=device)
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {epoch}/{t.epochs}",
                disable=not progress,
                leave=False,
            )
            for step in bar:
                global_step = (epoch - 1) * steps_per_epoch + step
                weight = kl_weight(config, global_step, steps_per_epoch)
                rows = train_x[order[step * batch : (step + 1) * batch]]
                with autocast(device, t.precision):
                    losses[step] = train_step(
                        svi, runner.shard(rows), weight, t.reconstruction_weight
                    )
                if (step + 1) % t.check_every == 0 or step + 1 == steps_per_epoch:
                    _check_finite(
                        losses, step + 1 - t.check_every, step, epoch, lr, hint
                    )
                if progress and step % 50 == 0:  # the mean loss so far this epoch
                    mean = losses[: step + 1].mean().item() * runner.world_size / batch
                    bar.set_postfix(loss=f"{mean:.2f}")
            total = runner.all_sum(losses.sum()).item()
            row = {
                "epoch": epoch,
                "lr": lr,
                "world_size": runner.world_size,
                "train_objective": -total / (steps_per_epoch * batch),
            }
            if scoring.due(epoch, t.epochs):
                row.update(scoring.scores(vae, t.seed * 1_000_003 + epoch))
            row.update(
                kl_weight=kl_weight(
                    config, epoch * steps_per_epoch - 1, steps_per_epoch
                ),
                seconds=time.perf_counter() - began,
            )
            if analytic_kl is not None:
                row["analytic_kl"] = analytic_kl
            metrics.append(row)
            stopped = stop_reason(metrics, t.patience)
            if stopped:
                row["stopped"] = stopped
            rng = runner.rng_state() if run_dir is not None else {}
            if run is not None:
                state = {
                    "epoch": epoch,
                    "model": vae.state_dict(),
                    "optimizer": optimizer.get_state(),
                    **rng,
                    "metrics": metrics,
                    "config": config.to_dict(),
                }
                run.commit(state)
            board.log(metrics)
            if on_epoch is not None:
                on_epoch(row)
            if stopped:
                break
    return metrics


def _check_not_stopped(metrics: List[Dict], patience: int, run_dir: Path) -> None:
    """Refuse to resume a run that early stopping ended, unless ``patience`` now lets it go
    on (then the old reason is dropped from its last row)."""
    reason = stop_reason(metrics, patience)
    if reason:
        raise TrainingError(
            f"the run in '{run_dir}' stopped early at epoch {metrics[-1]['epoch']}: "
            f"{reason}; to train further, resume with a larger --set train.patience=N"
        )
    if metrics:
        metrics[-1].pop("stopped", None)


def _binarized_hint(config: Config, vae: VAE) -> str:
    """The extra likely cause of a non-finite loss when binarized data meet a likelihood of
    grey levels (its scale can collapse onto the two values)."""
    likelihood = getattr(vae, "likelihood", None)  # a family may have none of its own
    if config.data.binarize is True and not getattr(likelihood, "binary", False):
        return (
            f", or binarized data (data.binarize = true) under the "
            f"'{config.likelihood.name}' likelihood, which models grey levels: set "
            f"--set data.binarize=false (or auto)"
        )
    return ""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for ``precision = "bf16"`` (matrix products in bfloat16, reductions and
    log-densities in float32 as autocast decides); a disabled context for ``"fp32"``."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def _check_finite(
    losses: torch.Tensor, first: int, last: int, epoch: int, lr: float, hint: str = ""
):
    """Raise at the first non-finite loss among steps ``first..last`` (0-based; one host
    synchronisation)."""
    window = losses[max(first, 0) : last + 1]
    bad = (~torch.isfinite(window)).nonzero()
    if bad.numel():
        step = max(first, 0) + int(bad[0])
        raise TrainingError(
            f"the loss became {losses[step].item()} at epoch {epoch}, step {step + 1}; "
            f"training stopped and the last checkpoint (epoch {epoch - 1}) is intact. Likely "
            f"causes: a learning rate too high (now {lr:g}), data with extreme values, or a "
            f"likelihood scale near zero{hint}"
        )
