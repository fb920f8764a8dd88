"""``fit``: the SVI loop. It knows SVI, the data and the run directory, nothing else.

Each epoch: shuffle the training set (the order is a function of seed and epoch alone), take
SVI steps on full mini-batches (the remainder is dropped, reshuffled next epoch), stop at the
first non-finite loss, evaluate the ELBO's terms on the test set (and on a fixed slice of the
training set), append a metrics row, and commit the epoch to the run directory (rundir.py: the
layout, the lock, the atomic commit); ``resume=True`` continues from it and, with the same seed
on the CPU, produces the same numbers as an uninterrupted run. Under torchrun each rank steps its
shard of every global batch and only rank 0 holds and writes the run directory (see
distributed.py).
"""

import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pyro
import pyro.optim
import torch
from pyro.infer import SVI
from pyro.infer.util import torch_item
from tqdm.auto import tqdm

from . import checkpoint, distributed, rundir
from .config import Config
from .data import Dataset
from .diagnostics import elbo_terms
from .errors import ConfigError, TrainingError
from .objectives import build_objective
from .rundir import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE  # noqa: F401
from .schedules import kl_weight, step_args
from .vae import VAE

EVAL_ROWS = 2000  # rows of the training set whose ELBO is reported each epoch


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; asking for CUDA without one fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{name}' was asked for but no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}); use --device cpu, or --device auto to take a GPU "
            f"only when there is one"
        )
    return torch.device(name)


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam_implementation(params: List[torch.Tensor]) -> Dict[str, bool]:
    """``fused=True`` where torch has a fused Adam for every parameter, else ``foreach=True``."""
    if all(
        p.device.type in FUSED_ADAM_DEVICES and p.is_floating_point() for p in params
    ):
        return {"fused": True}
    return {"foreach": True}


class ModuleOptimizer(pyro.optim.PyroOptim):
    """One fused ``torch.optim.Adam`` over all of a module's parameters.

    ``pyro.optim.Adam`` keeps one optimizer per parameter and steps them one by one; a single
    optimizer steps them all, and its fused implementation (one kernel per parameter for the
    whole update, on the CPU and on CUDA) is about three times faster than the default
    per-parameter loop on the CPU. Devices without a fused Adam get the foreach implementation.
    ``SVI`` calls it with the parameters its trace saw, which must be the module's (every VAE
    parameter is registered by ``pyro.module``). After each step the gradients are set to
    ``None`` (as ``zero_grad`` does), so the next backward pass writes them instead of adding to
    zero tensors that SVI allocated.
    """

    def __init__(self, module: torch.nn.Module, lr: float):
        super().__init__(torch.optim.Adam, {"lr": lr})
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.known = set(self.params)
        self.optimizer = torch.optim.Adam(
            self.params, lr=lr, **adam_implementation(self.params)
        )

    def __call__(self, params, *args, **kwargs) -> None:
        unknown = (
            [] if params is self.params else [p for p in params if p not in self.known]
        )
        if unknown:
            raise TrainingError(
                f"{len(unknown)} parameter(s) seen by SVI are not the VAE's parameters; "
                f"register every network with pyro.module"
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def get_state(self) -> Dict:
        return self.optimizer.state_dict()

    def set_state(self, state: Dict) -> None:
        self.optimizer.load_state_dict(state)


def learning_rate(config: Config, epoch: int) -> float:
    """The learning rate of (1-based) ``epoch``: ``lr * lr_decay ** (epoch - 1)``."""
    return config.train.lr * config.train.lr_decay ** (epoch - 1)


class ModuleSVI(SVI):
    """``SVI`` with a ``ModuleOptimizer``, which already knows every parameter it steps.

    ``SVI.step`` runs the loss under a param-capture trace to learn which parameters to hand
    the optimizer. Here the first step does exactly that (so ``ModuleOptimizer`` checks that
    every parameter the programs use is the module's); later steps compute the same loss and
    gradients without the trace and hand the optimizer the module's parameters. With no
    handler on Pyro's stack, the compiled ELBOs also skip their per-parameter messages
    (objectives.py, ``_DirectCalls``): together about 0.15 ms per step on the CPU, a tenth of
    a batch-10 step. Losses and parameters are the same as with ``SVI``, bit for bit.
    """

    def __init__(self, model, guide, optim: ModuleOptimizer, loss):
        super().__init__(model, guide, optim, loss=loss)
        self.params_checked = False

    def step(self, *args, **kwargs) -> float:
        if not self.params_checked:
            loss = super().step(*args, **kwargs)
            self.params_checked = True
            return loss
        loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        self.optim(self.optim.params)
        return torch_item(loss)


def make_svi(vae: VAE, config: Config) -> Tuple[SVI, ModuleOptimizer]:
    """The ``SVI`` object that ``fit`` steps (a ``ModuleSVI``), and its optimizer: the
    configured objective and one Adam over the VAE's parameters (call it once the VAE is on
    its device)."""
    optimizer = ModuleOptimizer(vae, config.train.lr)
    elbo = build_objective(config)
    return ModuleSVI(vae.model, vae.guide, optimizer, loss=elbo), optimizer


def train_step(
    svi: SVI, x: torch.Tensor, weight: float, reconstruction_weight: float = 1.0
) -> torch.Tensor:
    """One SVI step on the mini-batch ``x`` with KL weight ``weight`` and reconstruction weight
    ``reconstruction_weight`` (0-d tensors on ``x``'s device: ``schedules.step_args``); returns
    the loss."""
    return svi.step(*step_args(x, weight, reconstruction_weight))


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The training-set permutation of an epoch: a function of (seed, epoch) only."""
    return torch.randperm(
        n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    )


def fit(
    vae: VAE,
    data: Dataset,
    config: Config,
    run_dir: Optional[Path] = None,
    resume: bool = False,
    progress: bool = False,
) -> List[Dict]:
    """Train ``vae`` on ``data.train`` with SVI as ``config`` says; returns the metrics rows.

    With ``run_dir``, holds it locked and commits each epoch there (``checkpoint.pt``, then
    ``metrics.jsonl`` and ``best.pt``); a new run moves a previous run's files aside until its
    first commit. With ``resume``, first loads the checkpoint and continues after its epoch.
    """
    run_dir = None if run_dir is None else Path(run_dir)
    main = distributed.main_process()
    with rundir.opened(run_dir if main else None) as run:
        return _fit(vae, data, config, run, run_dir, resume, progress)


def _fit(
    vae: VAE,
    data: Dataset,
    config: Config,
    run: Optional[rundir.RunDir],
    run_dir: Optional[Path],
    resume: bool,
    progress: bool,
) -> List[Dict]:
    t = config.train
    ctx = distributed.setup(resolve_device(t.device))
    device = ctx.device
    vae.likelihood.check_data(data.train, "the training data")
    vae.likelihood.check_data(data.test, "the test data")
    train_x, test_x = data.train.to(device), data.test.to(device)
    valid_x = None if data.valid is None else data.valid.to(device)
    eval_x = train_x[:EVAL_ROWS]
    vae.to(device)
    vae.release_params()
    svi, optimizer = make_svi(vae, config)
    if ctx.distributed or t.check_every > 1 or t.precision != "fp32":
        svi = distributed.tensor_svi(vae, optimizer, _objective(config, ctx), ctx)
    metrics: List[Dict] = []
    start_epoch = 1
    if resume and run_dir is None:
        raise TrainingError("resuming needs the run directory: pass --out RUN_DIR")
    state = None if run is None else run.start(config, resume, vae.state_dict())
    if ctx.distributed:  # rank 0 has recovered or moved aside the previous run
        distributed.barrier(ctx)
        if resume and run is None:
            state = checkpoint.load(run_dir / CHECKPOINT_FILE, map_location=device)
    if resume:
        vae.load_state_dict(state["model"])
        optimizer.set_state(state["optimizer"])
        distributed.restore_rng(state, ctx, t.seed)
        metrics, start_epoch = state["metrics"], state["epoch"] + 1
    else:
        pyro.set_rng_seed(distributed.rank_seed(t.seed, ctx.rank))

    n = train_x.shape[0]
    batch = min(t.batch_size, n)
    steps_per_epoch = n // batch
    analytic_kl = (
        vae.kl_is_analytic(test_x) if config.objective.name == "meanfield" else None
    )
    with pyro.validation_enabled(t.validate):
        for epoch in range(start_epoch, t.epochs + 1):
            began = time.perf_counter()
            order = epoch_order(t.seed, epoch, n).to(device)
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
                        svi,
                        distributed.shard(rows, ctx),
                        weight,
                        t.reconstruction_weight,
                    )
                if (step + 1) % t.check_every == 0 or step + 1 == steps_per_epoch:
                    _check_finite(losses, step + 1 - t.check_every, step, epoch, lr)
                if progress and step % 50 == 0:
                    bar.set_postfix(
                        loss=f"{losses[step].item() * ctx.world_size / batch:.2f}"
                    )
            total = distributed.all_sum(losses.sum(), ctx).item()
            row = {
                "epoch": epoch,
                "lr": lr,
                "world_size": ctx.world_size,
                "train_objective": -total / (steps_per_epoch * batch),
            }
            row.update(_evaluate(vae, test_x, eval_x))
            if valid_x is not None:
                row["valid_elbo"] = elbo_terms(vae, valid_x)["elbo"].mean().item()
            row.update(
                kl_weight=kl_weight(
                    config, epoch * steps_per_epoch - 1, steps_per_epoch
                ),
                seconds=time.perf_counter() - began,
            )
            if analytic_kl is not None:
                row["analytic_kl"] = analytic_kl
            metrics.append(row)
            rng_ranks = distributed.gather_rng(ctx) if run_dir is not None else []
            if run is not None:
                state = {
                    "epoch": epoch,
                    "model": vae.state_dict(),
                    "optimizer": optimizer.get_state(),
                    "rng": rng_ranks[0],
                    "metrics": metrics,
                    "config": config.to_dict(),
                }
                if ctx.distributed:  # every rank's stream, restored on resume
                    state["rng_ranks"] = rng_ranks
                run.commit(state)
    return metrics


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for ``precision = "bf16"`` (matrix products in bfloat16, reductions and
    log-densities in float32 as autocast decides); a disabled context for ``"fp32"``."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def _check_finite(losses: torch.Tensor, first: int, last: int, epoch: int, lr: float):
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
            f"likelihood scale near zero"
        )


def _objective(config: Config, ctx: distributed.Context):
    """The configured ELBO, without TorchScript under DDP (DDP needs the eager graph) and under
    autocast (torch.jit.trace cannot capture its casts of parameters)."""
    return build_objective(
        config, eager=ctx.distributed or config.train.precision != "fp32"
    )


def _evaluate(vae: VAE, test_x: torch.Tensor, eval_x: torch.Tensor) -> Dict[str, float]:
    test = elbo_terms(vae, test_x)
    return {
        "train_elbo": elbo_terms(vae, eval_x)["elbo"].mean().item(),
        "test_elbo": test["elbo"].mean().item(),
        "kl": test["kl"].mean().item(),
        "reconstruction": test["reconstruction"].mean().item(),
    }
