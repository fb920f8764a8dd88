"""``enum_meanfield`` against plain ``enum`` on the digits semi-supervised model (M2): the CPU
time of one ``loss_and_grads`` step and the SE of the ELBO estimate, in interleaved rounds.

The model (``--family semi_supervised``, the digits data set, 100 labels, the default network
and parts) is first trained for ``--epochs`` epochs with ``enum`` (so the guide is neither at
its initialization nor at the other objective's optimum), then frozen. Each round times
``--steps`` calls of ``loss_and_grads`` on a batch of ``--batch`` training rows (labelled and
unlabelled as ``fit`` draws them) for each objective, the order alternating from round to
round, and draws ``--repeats`` ELBO estimates of the unlabelled rows of a fixed batch; then
``--grad-draws`` gradients of that ELBO per objective (the total variance: the sum over all
parameters of each component's variance). One thread. Commands and results:
benchmarks/README.md ("enum_meanfield").
"""

import argparse
import json
import math
import platform
import sys
import time

import pyro
import torch

from pyro_vae import config as cfg
from pyro_vae import models
from pyro_vae.data import load as load_data
from pyro_vae.infer.trace_enum_meanfield import TraceEnumMeanField_ELBO
from pyro_vae.registry import OBJECTIVES
from pyro_vae.run.train import fit

NAMES = ("enum", "enum_meanfield")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--grad-draws", type=int, default=60)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = cfg.load(
        None,
        {
            "model.family": "semi_supervised",
            "model.labels": 100,
            "objective.name": "enum",
            "train.epochs": args.epochs,
            "train.device": "cpu",
        },
    )
    data = load_data(config.data)
    m2 = models.build(config, data.shape)
    began = time.perf_counter()
    fit(m2, data, config)
    trained = time.perf_counter() - began
    rows = m2.training_rows(data)
    batch = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
    batch = batch[: args.batch]
    unlabelled = rows[rows[:, -1] < 0][: args.batch]
    elbos = {name: OBJECTIVES.build(name, None, {}) for name in NAMES}
    elbos["enum_meanfield"].loss(m2.model, m2.guide, batch)
    assert isinstance(elbos["enum_meanfield"], TraceEnumMeanField_ELBO)
    replaced = list(elbos["enum_meanfield"].replaced)
    params = list(m2.parameters())
    seconds = {name: [] for name in NAMES}
    draws = {name: [] for name in NAMES}
    pyro.set_rng_seed(1)
    for r in range(args.rounds):
        for name in NAMES if r % 2 == 0 else NAMES[::-1]:
            elbo = elbos[name]
            start = time.process_time()
            for _ in range(args.steps):
                elbo.loss_and_grads(m2.model, m2.guide, batch)
                for q in params:
                    q.grad = None
            seconds[name].append((time.process_time() - start) / args.steps)
            with torch.no_grad():
                draws[name] += [
                    -elbo.loss(m2.model, m2.guide, unlabelled) / len(unlabelled)
                    for _ in range(args.repeats // args.rounds)
                ]
    grads = {name: [] for name in NAMES}
    for i in range(args.grad_draws):
        for name in NAMES if i % 2 == 0 else NAMES[::-1]:
            loss = elbos[name].differentiable_loss(m2.model, m2.guide, unlabelled)
            flat = torch.autograd.grad(
                loss / len(unlabelled), params, allow_unused=True
            )
            grads[name].append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(q)).flatten()
                        for g, q in zip(flat, params)
                    ]
                )
            )
    result = {"settings": vars(args), "train_seconds": trained, "replaced": replaced}
    for name in NAMES:
        t = torch.tensor(seconds[name])
        d = torch.tensor(draws[name], dtype=torch.float64)
        result[name] = {
            "step_cpu_ms": 1000 * t.median().item(),
            "step_cpu_ms_rounds": [1000 * s for s in seconds[name]],
            "elbo_mean": d.mean().item(),
            "elbo_sd": d.std().item(),
            "elbo_mean_se": (d.std() / math.sqrt(len(d))).item(),
            "draws": len(d),
            "grad_total_variance": torch.stack(grads[name]).var(0).sum().item(),
        }
    e, m = result["enum"], result["enum_meanfield"]
    result["ratios"] = {
        "step_cpu_time_enum_meanfield_over_enum": m["step_cpu_ms"] / e["step_cpu_ms"],
        "elbo_sd_enum_meanfield_over_enum": m["elbo_sd"] / e["elbo_sd"],
        "grad_total_variance_enum_meanfield_over_enum": m["grad_total_variance"]
        / e["grad_total_variance"],
    }
    result["machine"] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "platform": platform.platform(),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    out = main()
    out.pop("machine")
    for name in NAMES:
        out[name].pop("step_cpu_ms_rounds")
    print(json.dumps(out, indent=1))
