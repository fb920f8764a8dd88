"""What tests/run/test_distributed.py runs in each process under torchrun (and in-process as the
one-process reference). Not a test module itself.

``python -m torch.distributed.run ... tests/run/distributed_worker.py OUT MODE...`` with modes:

* ``onestep_jit``: the same for the compiled (``jit``) trace ELBO only, into
  OUT/onestep_jit_rank<r>.pt.
* ``onestep``: one SVI step of the default digits VAE on one global batch for each objective
  (trace, meanfield, iwae), with "the same noise" as one process (see ``FixedNoise``), plus two
  deliberately broken variants; rank r saves its parameters and gradients to OUT.
* ``onestep_hierarchical``: ``onestep`` for the hierarchical family (two layers, bottom-up
  with the trace ELBO, ladder with the mean-field one; the noise fixed at every layer), plus
  the wrong-rows bug, into OUT/onestep_hier_rank<r>.pt; ``train_hierarchical``: 2 epochs of
  it (bottom-up) into OUT/hier (rank 0 writes).
* ``resume``: a 3-epoch run, and a 2-epoch run resumed to 3 epochs (under torchrun).
* ``train5``: 5 epochs of the default digits config into OUT/run5 (rank 0 writes).
* ``resume_single``: resume OUT/single (a one-process run) to 3 epochs under torchrun.
* ``evaluate``: ``pyro-vae evaluate OUT/run5`` (sharded), as the last call.
* ``nan``: ``pyro-vae train`` (the console entry, ``pyro_vae.cli.main``) for 3 epochs into
  OUT/nan; rank 1 alone gets a NaN loss at epoch 2, step 2. ``nan_resume``: resume it, clean.
* ``kill``: ``pyro-vae train`` for 3 epochs into OUT/killed; rank 1 of the first attempt kills
  itself (SIGKILL) in epoch 2, and torchrun's restart resumes from the epoch-1 checkpoint.
"""

import dataclasses
import os
import signal
import sys
from pathlib import Path

import pyro
import torch
from pyro.poutine.messenger import Messenger

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.cli import app as cli
from pyro_vae.models import build as build_family
from pyro_vae.models.vae import LATENT, build
from pyro_vae.run import distributed, strategy
from pyro_vae.run import train as training
from pyro_vae.run.strategy import Torchrun
from pyro_vae.run.svi import ModuleOptimizer

BATCH = 100
OBJECTIVES = {
    "trace": {"objective.name": "trace", "objective.jit": False},
    "meanfield": {"objective.name": "meanfield", "objective.jit": False},
    "iwae": {"objective.name": "iwae"},
}
COMPILED = {"trace_jit": {"objective.name": "trace", "objective.jit": True}}
HIERARCHY = {"model.family": "hierarchical", "model.latent_layers": [4, 3]}
HIERARCHICAL = {
    "hier_bottom_up": {**HIERARCHY, "objective.name": "trace"},
    "hier_ladder": {
        **HIERARCHY,
        "model.inference": "ladder",
        "objective.name": "meanfield",
    },
}
NAN_CALL = 7  # 5 steps per epoch at FAST's global batch: epoch 2, step 2
FAST = {
    "model.hidden": [64],
    "model.latent_dim": 4,
    "train.batch_size": 250,
    "train.eval_every": 1,  # every epoch scored: a resumed run's rows match a straight run's
}


class FixedNoise(Messenger):
    """Draw the guide's ``"z"`` as loc + scale * eps, eps being rows ``rows`` of one global
    noise tensor of shape (K, B, latent) made from a fixed seed: every process makes the same
    tensor and takes its own rows, so N processes together use exactly the noise one process
    uses on the whole batch. (The diagonal Gaussian guide only; the value stays a
    reparameterized function of the guide's outputs, so gradients flow as with rsample.)
    ``sizes`` (site name -> size) fixes several sites so, each its own tensor.
    """

    def __init__(
        self, rows: slice, batch: int, latent: int, particles: int = 5, sizes=None
    ):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.eps = {
            name: torch.randn((particles, batch, size), generator=g)[:, rows]
            for name, size in (sizes or {LATENT: latent}).items()
        }

    def _pyro_sample(self, msg):
        if (
            msg["name"] not in self.eps
            or msg["is_observed"]
            or msg["value"] is not None
        ):
            return
        base = msg["fn"].base_dist
        shape = msg["fn"].shape()
        noise = self.eps[msg["name"]]
        eps = noise[: shape[0]] if len(shape) == 3 else noise[0]
        msg["value"] = base.loc + base.scale * eps


def rows_of_rank() -> slice:
    """Rank r's rows of a global batch: the specification, written out independently."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    per = BATCH // world
    return slice(rank * per, (rank + 1) * per)


def first_rows_only(self, batch):  # the injected bug: every rank takes the first shard
    return batch[: batch.shape[0] // self.world_size]


def one_step(objective: str, rows: slice, bug: str = ""):
    """Parameters, gradients and train objective after one step on the first BATCH rows."""
    options = {**OBJECTIVES, **COMPILED, **HIERARCHICAL}[objective]
    config = cfg.load(None, {**options, "train.epochs": 1})
    full = data.load(config.data)
    ds = dataclasses.replace(full, train=full.train[:BATCH])
    vae = build_family(config, ds.data_dim)
    sizes = {site.name: site.size for site in vae.latent_sites}
    grads = {}
    real_step, real_call = training.train_step, ModuleOptimizer.__call__
    real_scale, real_shard = distributed.ELBOLoss.__init__, Torchrun.shard

    def step(svi, x, *weights):
        with FixedNoise(rows, BATCH, config.model.latent_dim, sizes=sizes):
            return real_step(svi, x, *weights)

    def record(self, params, *args, **kwargs):
        grads.update({n: p.grad.clone() for n, p in vae.named_parameters()})
        return real_call(self, params, *args, **kwargs)

    def unscaled(
        self, vae, elbo, scale=1.0
    ):  # the injected bug: no x N before averaging
        real_scale(self, vae, elbo, 1.0)

    training.train_step, ModuleOptimizer.__call__ = step, record
    if bug == "scale":
        distributed.ELBOLoss.__init__ = unscaled
    if bug == "rows":
        Torchrun.shard = first_rows_only
    try:
        pyro.clear_param_store()
        metrics = training.fit(vae, ds, config)
    finally:
        training.train_step, ModuleOptimizer.__call__ = real_step, real_call
        distributed.ELBOLoss.__init__, Torchrun.shard = real_scale, real_shard
    params = {n: p.detach().clone() for n, p in vae.named_parameters()}
    return {"params": params, "grads": grads, "row": metrics[0]}


def run(out: Path, epochs: int, resume: bool = False, **overrides):
    config = cfg.load(None, {**FAST, "train.epochs": epochs, **overrides})
    ds = data.load(config.data)
    pyro.clear_param_store()
    training.fit(build(config, ds.data_dim), ds, config, out, resume=resume)


def main(out: Path, modes):
    rank = int(os.environ.get("RANK", 0))
    if "onestep" in modes:
        results = {name: one_step(name, rows_of_rank()) for name in OBJECTIVES}
        results["bug_rows"] = one_step("trace", rows_of_rank(), bug="rows")
        results["bug_scale"] = one_step("trace", rows_of_rank(), bug="scale")
        torch.save(results, out / f"onestep_rank{rank}.pt")
    if "onestep_trace" in modes:
        torch.save(
            {"trace": one_step("trace", rows_of_rank())}, out / f"onestep_rank{rank}.pt"
        )
    if "onestep_jit" in modes:  # the compiled ELBO under DDP (issue #25)
        torch.save(
            {"trace_jit": one_step("trace_jit", rows_of_rank())},
            out / f"onestep_jit_rank{rank}.pt",
        )
    if "onestep_hierarchical" in modes:
        results = {name: one_step(name, rows_of_rank()) for name in HIERARCHICAL}
        results["bug_rows"] = one_step("hier_bottom_up", rows_of_rank(), bug="rows")
        torch.save(results, out / f"onestep_hier_rank{rank}.pt")
    if "train_hierarchical" in modes:
        config = cfg.load(None, {**FAST, **HIERARCHY, "train.epochs": 2})
        ds = data.load(config.data)
        pyro.clear_param_store()
        training.fit(build_family(config, ds.data_dim), ds, config, out / "hier")
    if "resume" in modes:
        run(out / "straight", 3)
        run(out / "resumed", 2)
        run(out / "resumed", 3, resume=True)
    if "resume_single" in modes:
        run(out / "single", 3, resume=True)
    if "train5" in modes:
        config = cfg.load(None, {"train.epochs": 5})
        ds = data.load(config.data)
        pyro.clear_param_store()
        training.fit(build(config, ds.data_dim), ds, config, out / "run5")
    if "evaluate" in modes:
        args = ["evaluate", str(out / "run5"), "--num-samples", "20", "--limit", "45"]
        sys.exit(cli.main(args + ["--device", "cpu"]))
    if "nan" in modes or "nan_resume" in modes:
        from pyro_vae.cli import main as console

        real_forward, calls = distributed.ELBOLoss.forward, {"n": 0}

        def poisoned(self, *args):
            calls["n"] += 1
            loss = real_forward(self, *args)
            poison = "nan" in modes and rank == 1 and calls["n"] == NAN_CALL
            return loss * float("nan") if poison else loss

        distributed.ELBOLoss.forward = poisoned
        args = ["train", "--epochs", "3", "--no-progress", "--out", str(out / "nan")]
        fast = [f"--set={k}={v}" for k, v in FAST.items()]
        resume = ["--resume"] if "nan_resume" in modes else []
        sys.exit(console(args + fast + resume + ["--device", "cpu"]))
    if "kill" in modes:
        real = Torchrun.rng_state
        calls = {"n": 0}

        def gather(self):
            calls["n"] += 1
            if calls["n"] == 2 and self.rank == 1 and not distributed.restarted():
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self)

        Torchrun.rng_state = gather
        args = ["train", "--epochs", "3", "--no-progress", "--out", str(out / "killed")]
        fast = [f"--set={k}={v}" for k, v in FAST.items()]
        sys.exit(cli.main(args + fast + ["--device", "cpu"]))
    distributed.teardown()


if __name__ == "__main__":
    strategy.start(torch.device("cpu"))
    main(Path(sys.argv[1]), sys.argv[2:])
