"""What each part costs: training step and evaluation time of every prior, guide and objective
as a ratio to the default VAE (N(0, I) prior, diagonal guide, ``trace`` objective).

One part is varied at a time from the default, on the MNIST-sized net of Burda et al. (2016)
(784-200-200-50, tanh, Bernoulli pixels) and random binary data (no files needed), each part with
its registered default options (the VampPrior: 500 pseudo-inputs). Two costs:

- ``train``: CPU time of ``--steps`` training steps (``make_svi`` + ``train_step``, the code
  ``fit`` runs) at batch 100;
- ``eval``: CPU time per image of the importance-sampled log p(x)
  (``marginal.log_marginal_likelihood``, K = ``--num-samples`` draws, 5000 by default). The
  objective plays no part in evaluation, so only priors and guides are timed there.

Every configuration runs in the same process in interleaved rounds (the order reversed every
other round) with one torch thread, and the time is CPU time (``time.process_time``), since the
machines these run on are shared and wall-clock times move with the other tenants' load. Each
round gives the ratio part time / default time; the JSON holds each part's median ratio (lower
is better) in ``{"train": {"prior=vamp": ..., ...}, "eval": {...}}`` and the per-round figures
under ``detail``.

    python benchmarks/speed_parts.py --json benchmarks/results/speed_parts.json
    python benchmarks/speed_parts.py --quick   # a seconds-long smoke run
"""

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pyro
import torch

from pyro_vae import config as config_module
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.vae import build
from pyro_vae.registry import GUIDES, OBJECTIVES, PRIORS
from pyro_vae.run.svi import make_svi
from pyro_vae.run.train import train_step

DATA_DIM, LATENT, HIDDEN, BATCH = 784, 50, (200, 200), 100
DEFAULT = {"prior": "standard_normal", "guide": "diagonal", "objective": "trace"}


def variants(kinds: List[str]) -> List[str]:
    """``"default"`` and ``"kind=name"`` for every registered part of each kind but the default."""
    registries = {"prior": PRIORS, "guide": GUIDES, "objective": OBJECTIVES}
    names = ["default"]
    for kind in kinds:
        names += [f"{kind}={n}" for n in registries[kind].names() if n != DEFAULT[kind]]
    return names


def make_config(variant: str) -> config_module.Config:
    overrides = {
        "model.latent_dim": LATENT,
        "model.hidden": list(HIDDEN),
        "train.device": "cpu",
        "train.batch_size": BATCH,
    }
    if variant != "default":
        kind, name = variant.split("=")
        overrides[f"{kind}.name"] = name
    return config_module.load(None, overrides)


def data(n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(n, DATA_DIM, generator=generator) < 0.2).float()


def trainer(variant: str, x: torch.Tensor) -> Callable[[int], None]:
    """``steps`` training steps of ``variant`` on batches of ``x``."""
    config = make_config(variant)
    vae = build(config, DATA_DIM)
    vae.release_params()
    svi, _ = make_svi(vae, config)
    batches = x.split(BATCH)
    counter = [0]

    def run(steps: int) -> None:
        for _ in range(steps):
            loss = train_step(svi, batches[counter[0] % len(batches)], 1.0)
            counter[0] += 1
            if not loss == loss:
                raise RuntimeError(f"{variant}: the loss became NaN")

    return run


def evaluator(variant: str, x: torch.Tensor, k: int) -> Callable[[int], None]:
    """Importance-sampled log p(x) of ``images`` rows of ``x`` with K = ``k``."""
    vae = build(make_config(variant), DATA_DIM)
    vae.release_params()

    def run(images: int) -> None:
        estimate = log_marginal_likelihood(vae.model, vae.guide, x[:images], k)
        if not torch.isfinite(estimate.log_marginal).all():
            raise RuntimeError(f"{variant}: log p(x) is not finite")

    return run


def interleaved(
    runners: Dict[str, Callable[[int], None]], amount: int, rounds: int
) -> Dict[str, Dict]:
    """CPU time of ``runner(amount)`` per round, rounds interleaved; ratios to ``default``."""
    for run in runners.values():  # warm-up (JIT compilation, first allocations)
        run(1)
    names = list(runners)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.process_time()
            runners[name](amount)
            times[name].append((time.process_time() - t0) / amount)
    out = {}
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times["default"])]
        out[name] = {
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "cpu_s_each": statistics.median(times[name]),
        }
    return out


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9)")
    parser.add_argument("--steps", type=int, help="training steps per round (20)")
    parser.add_argument("--images", type=int, help="evaluated images per round (2)")
    parser.add_argument("--num-samples", type=int, help="K per image (5000)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = args.rounds or (2 if args.quick else 9)
    steps = args.steps or (2 if args.quick else 20)
    images = args.images or (1 if args.quick else 2)
    k = args.num_samples or (20 if args.quick else 5000)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = data(max(10 * BATCH, images))
    with pyro.validation_enabled(False):  # fit's default (train.validate = false)
        train_names = variants(["prior", "guide", "objective"])
        train = interleaved({v: trainer(v, x) for v in train_names}, steps, rounds)
        eval_names = variants(["prior", "guide"])
        runners = {v: evaluator(v, x, k) for v in eval_names}
        evaluation = interleaved(runners, images, rounds)
    words = [Path(sys.argv[0]).as_posix()] + (sys.argv[1:] if argv is None else argv)
    summary = {
        "train": {v: round(r["ratio"], 3) for v, r in train.items() if v != "default"},
        "eval": {
            v: round(r["ratio"], 3) for v, r in evaluation.items() if v != "default"
        },
        "detail": {"train": train, "eval": evaluation},
        "settings": {
            "rounds": rounds,
            "steps_per_round": steps,
            "batch_size": BATCH,
            "images_per_round": images,
            "num_samples": k,
            "torch_threads": 1,
            "time": "process_time",
        },
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "date": date.today().isoformat(),
        "command": " ".join(words),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    for kind, ratios in main().items():
        if kind in ("train", "eval"):
            print(kind, " ".join(f"{v} {r:.2f}" for v, r in ratios.items()))
