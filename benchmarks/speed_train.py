"""Training speed: the library's SVI step against a plain-PyTorch VAE step, same network and optimizer.

The library side is exactly what ``pyro_vae.run.train.fit`` runs per step with the default config
(``make_svi`` + ``train_step`` under ``pyro.validation_enabled(config.train.validate)``, the batch
gathered from the epoch's permutation, the loss checked for being finite), on the MNIST-sized net of
Burda et al. (2016): 784-200-200-50, tanh, Bernoulli pixels, Gaussian q(z | x) with softplus scale.
The plain-PyTorch side computes the same single-sample Monte Carlo ELBO (log p(x | z) + log p(z)
- log q(z | x), summed over the batch, as ``Trace_ELBO`` does) with tensor ops, from the same
initial weights, with Adam at the same learning rate. Two plain-PyTorch baselines run:

- ``torch_same_adam``: the plain VAE with the library's Adam implementation (fused on the CPU
  and CUDA), which isolates what Pyro itself costs: ``ratio_vs_torch_same_optimizer``, the
  headline, at each batch size (10, 100 and 1000 by default);
- ``torch``: Adam as a plain PyTorch VAE writes it, ``torch.optim.Adam(model.parameters(),
  lr=1e-3)`` with torch's default implementation (``ratio_vs_torch``).

With ``--attribution`` three more library steppers run, compiled with torch's Normal for the
guide and the N(0, I) prior instead of ``distributions.ReparameterizedNormal``/``UnitNormal``
(``library_torch_densities``), without ``jit_elbo.specialized`` (``library_unspecialized``), or
both (``library_neither``): what each change contributes.

All run in one process in interleaved rounds (their order alternates), so background load on a
shared machine hits them alike. Each round's time is the process's CPU time
(``time.process_time``; use ``--threads 1`` so that it is one core's work) on the CPU and wall
time on CUDA; each round gives a ratio, and the median ratio over the rounds is reported with
the rounds' quartiles and range (``..._q1``, ``..._q3``, ``..._min``, ``..._max``).

    python benchmarks/speed_train.py --quick --json benchmarks/results/speed_train_cpu.json
"""

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae import config as config_module
from pyro_vae.infer import jit_elbo
from pyro_vae.models.family import shuffled
from pyro_vae.models.vae import VAE, build
from pyro_vae.parts import guides, priors
from pyro_vae.run.svi import adam_implementation, make_svi
from pyro_vae.run.train import kl_weight, train_step

DATA_DIM, LATENT, HIDDEN = 784, 50, (200, 200)
LOG_2PI = math.log(2 * math.pi)


class TorchVAE(nn.Module):
    """The same network written as a plain PyTorch VAE (weights copied from a library VAE)."""

    def __init__(self, vae: VAE):
        super().__init__()
        # the library's trunks are plain nn.Sequential/nn.Linear modules: copies of them are too
        self.trunk = copy.deepcopy(vae.encoder.trunk)
        self.loc = copy.deepcopy(vae.encoder.loc)
        self.raw_scale = copy.deepcopy(vae.encoder.raw_scale)
        self.decoder = copy.deepcopy(vae.decoder)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative single-sample ELBO, summed over the batch."""
        h = self.trunk(x)
        loc, scale = self.loc(h), F.softplus(self.raw_scale(h)) + 1e-5
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_px = -F.binary_cross_entropy_with_logits(
            self.decoder(z), x, reduction="none"
        ).sum(-1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz = -(0.5 * (eps.pow(2) + LOG_2PI) + scale.log()).sum(-1)
        return -(log_px + log_pz - log_qz).sum()


def library_stepper(
    device: torch.device, batch: int, jit: bool = True
) -> Callable[[int], float]:
    """``fit``'s inner loop body with the default config (only the net's sizes changed)."""
    overrides = {
        "model.latent_dim": LATENT,
        "model.hidden": list(HIDDEN),
        "train.device": device.type,
        "train.batch_size": batch,
    }
    if not jit:
        overrides["objective.jit"] = False
    config = config_module.load(None, overrides)
    vae = build(config, DATA_DIM).to(device)
    vae.release_params()
    svi, _ = make_svi(vae, config)
    data, steps_per_epoch, orders = _data(device, batch)
    pyro.enable_validation(
        config.train.validate
    )  # fit wraps its whole loop in this setting

    def step(i: int) -> float:
        epoch, s = divmod(i, steps_per_epoch)
        weight = kl_weight(config, i, steps_per_epoch)
        loss = train_step(svi, data[orders(epoch)[s * batch : (s + 1) * batch]], weight)
        if not math.isfinite(loss):
            raise RuntimeError(f"library loss became {loss}")
        return loss

    step.vae = vae  # type: ignore[attr-defined]
    step.svi = svi  # type: ignore[attr-defined]
    return step


def library_variant(
    device: torch.device, batch: int, densities: bool, specialize: bool
) -> Callable[[int], float]:
    """``library_stepper`` compiled with torch's Normal for the guide and the N(0, I) prior
    (``densities=False``) and/or without ``jit_elbo.specialized`` (``specialize=False``): its
    first steps (which compile and keep the graph) run with those parts swapped back."""
    saved = (guides.ReparameterizedNormal, priors.UnitNormal, jit_elbo.specialized)
    try:
        if not densities:
            guides.ReparameterizedNormal = dist.Normal
            priors.UnitNormal = lambda like: dist.Normal(
                torch.zeros_like(like), torch.ones_like(like)
            )
        if not specialize:
            jit_elbo.specialized = lambda traced: traced
        step = library_stepper(device, batch)
        for i in range(3):  # compile, then keep the directly called graph
            step(i)
    finally:
        guides.ReparameterizedNormal, priors.UnitNormal, jit_elbo.specialized = saved
    return step


def torch_stepper(
    vae: VAE, device: torch.device, batch: int, same_adam: bool = False
) -> Callable[[int], float]:
    """A plain-PyTorch training step: forward, zero_grad, backward, Adam, ``loss.item()``;
    Adam as torch defaults it, or (``same_adam``) with the library's implementation."""
    model = TorchVAE(vae).to(device)
    params = list(model.parameters())
    extra = adam_implementation(params) if same_adam else {}
    optimizer = torch.optim.Adam(params, lr=1e-3, **extra)
    data, steps_per_epoch, orders = _data(device, batch)

    def step(i: int) -> float:
        epoch, s = divmod(i, steps_per_epoch)
        loss = model.loss(data[orders(epoch)[s * batch : (s + 1) * batch]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"torch loss became {value}")
        return value

    return step


def _data(device: torch.device, batch: int):
    """Synthetic binary 'images' (10,000 rows, or 10 batches if larger) and fit's epoch orders."""
    n = max(10_000, 10 * batch)
    data = (
        (torch.rand(n, DATA_DIM, generator=torch.Generator().manual_seed(0)) < 0.2)
        .float()
        .to(device)
    )
    cache: Dict[int, torch.Tensor] = {}

    def orders(epoch: int) -> torch.Tensor:
        if epoch not in cache:
            cache.clear()
            cache[epoch] = shuffled(0, epoch + 1, n).to(device)
        return cache[epoch]

    return data, n // batch, orders


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    device: torch.device,
    batch: int,
    rounds: int,
    steps: int,
    warmup: int,
    eager: bool,
    attribution: bool = False,
) -> Dict:
    """Interleaved rounds of ``steps`` steps each; per-implementation steps/s and per-round ratios."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    lib = library_stepper(device, batch)
    impls: Dict[str, Callable[[int], float]] = {
        "library": lib,
        "torch": torch_stepper(lib.vae, device, batch),
        "torch_same_adam": torch_stepper(lib.vae, device, batch, same_adam=True),
    }
    if eager:
        impls["library_eager"] = library_stepper(device, batch, jit=False)
    if attribution:
        for name, densities, specialize in ATTRIBUTION:
            impls[name] = library_variant(device, batch, densities, specialize)
    counters = {name: 0 for name in impls}
    rates: Dict[str, List[float]] = {name: [] for name in impls}
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def run(name: str, count: int) -> None:
        for _ in range(count):
            impls[name](counters[name])
            counters[name] += 1

    for name in impls:
        run(name, warmup)
    _sync(device)
    names = list(impls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            began = clock()
            run(name, steps)
            _sync(device)
            rates[name].append(steps / (clock() - began))
    out = {
        "device": device.type,
        "batch_size": batch,
        "rounds": rounds,
        "steps_per_round": steps,
        "clock": "wall" if device.type == "cuda" else "cpu",
    }
    for name in impls:
        out[name] = {
            "steps_per_s": statistics.median(rates[name]),
            "ms_per_step": 1e3 / statistics.median(rates[name]),
            **_ratios(
                "ratio_vs_torch_same_optimizer", rates[name], rates["torch_same_adam"]
            ),
            **_ratios("ratio_vs_torch", rates[name], rates["torch"]),
        }
    return out


ATTRIBUTION = [  # (name, library densities, specialized graph)
    ("library_torch_densities", False, True),
    ("library_unspecialized", True, False),
    ("library_neither", False, False),
]


def _ratios(label: str, rates: List[float], baseline: List[float]) -> Dict[str, float]:
    """The median of the rounds' ratios, their quartiles and range."""
    ratios = sorted(a / b for a, b in zip(rates, baseline))
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        label: statistics.median(ratios),
        f"{label}_q1": q1,
        f"{label}_q3": q3,
        f"{label}_min": ratios[0],
        f"{label}_max": ratios[-1],
    }


def machine() -> Dict:
    model = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(
            line.split(":", 1)[1].strip()
            for line in lines
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    info = {
        "cpu": model,
        "nproc": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--json, --device and --threads, shared with speed_eval.py."""
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--device",
        choices=("both", "cpu", "cuda"),
        default="both",
        help="both = the CPU, and CUDA when a GPU is visible",
    )
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads (default: torch's choice)"
    )


def chosen_devices(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> List[torch.device]:
    """Apply --threads; the devices --device names (CUDA only when a GPU is visible)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu":
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            parser.error("--device cuda: no CUDA GPU is visible to torch")
    return devices


def finish(summary: Dict, args: argparse.Namespace, argv) -> Dict:
    """Add the machine, command and date to ``summary``; write it to --json when given."""
    words = [Path(sys.argv[0]).as_posix()] + (
        sys.argv[1:] if argv is None else list(argv)
    )
    summary.update(
        machine=machine(), date=date.today().isoformat(), command=" ".join(words)
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few short rounds (under a minute on 2 cores)",
    )
    add_common_arguments(parser)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds (default 5 quick, 21 full)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="steps per round at batch 100 (scaled down for larger batches on the CPU)",
    )
    parser.add_argument(
        "--no-eager",
        action="store_true",
        help="skip the library with objective.jit = false",
    )
    parser.add_argument(
        "--attribution",
        action="store_true",
        help="also the library without its densities, its graph specialization, or both",
    )
    parser.add_argument(
        "--torchrun",
        type=int,
        nargs="*",
        default=[],
        help="also the step under torchrun with these process counts on the CPU (gloo), "
        "global batch 100 (benchmarks/torchrun_steps.py)",
    )
    args = parser.parse_args(argv)
    devices = chosen_devices(parser, args)
    rounds = args.rounds or (5 if args.quick else 21)
    base_steps = args.steps or (20 if args.quick else 50)
    results = []
    for device in devices:
        for batch in args.batch_sizes:
            steps = (
                max(5, base_steps * 100 // max(batch, 100))
                if device.type == "cpu"
                else base_steps
            )
            result = compare(
                device,
                batch,
                rounds,
                steps,
                warmup=max(5, steps // 2),
                eager=not args.no_eager,
                attribution=args.attribution,
            )
            results.append(result)
            line = "  ".join(
                f"{name} {result[name]['ms_per_step']:7.3f} ms "
                f"({result[name]['ratio_vs_torch_same_optimizer']:.3f}x same-Adam, "
                f"{result[name]['ratio_vs_torch']:.3f}x torch)"
                for name in ("library", "library_eager", *(a[0] for a in ATTRIBUTION))
                if name in result
            )
            print(f"{device.type:4s} batch {batch:5d}: {line}", flush=True)
    headline = "cuda" if any(r["device"] == "cuda" for r in results) else "cpu"
    mine = [r for r in results if r["device"] == headline]
    summary = {
        "ratio_device": headline,
        "ratio_vs_torch_same_optimizer": {
            str(r["batch_size"]): r["library"]["ratio_vs_torch_same_optimizer"]
            for r in mine
        },
        "ratio_vs_torch": {
            str(r["batch_size"]): r["library"]["ratio_vs_torch"] for r in mine
        },
        "results": results,
    }
    if args.torchrun:
        summary.update(torchrun_figures(args.torchrun, rounds, base_steps))
    return finish(summary, args, argv)


def torchrun_figures(counts: List[int], rounds: int, steps: int) -> Dict:
    """The step under torchrun with each process count: the same-Adam ratio (rank 0's CPU
    time per round; the wall-time ratio is in ``torchrun``), and the group's steps/s (wall
    time) with N processes over steps/s with 1."""
    import torchrun_steps

    runs = {str(n): torchrun_steps.launch(n, 100, rounds, steps) for n in counts}
    for n, run in runs.items():
        print(
            f"torchrun {n} process(es), batch 100: library "
            f"{run['library']['ratio_vs_torch_same_optimizer_cpu']:.3f}x, eager "
            f"{run['library_eager']['ratio_vs_torch_same_optimizer_cpu']:.3f}x the plain "
            f"step with the same Adam (CPU time; wall "
            f"{run['library']['ratio_vs_torch_same_optimizer']:.3f}x; "
            f"{run['backend'] or 'no process group'})",
            flush=True,
        )
    out: Dict = {
        "torchrun": runs,
        "torchrun_ratio_vs_torch_same_optimizer": {
            n: run["library"]["ratio_vs_torch_same_optimizer_cpu"]
            for n, run in runs.items()
        },
    }
    if "1" in runs:
        one = runs["1"]
        out["torchrun_scaling_vs_1_process"] = {
            n: {
                name: run[name]["steps_per_s_wall"] / one[name]["steps_per_s_wall"]
                for name in ("library", "library_eager", "torch_same_adam")
            }
            for n, run in runs.items()
            if n != "1"
        }
    return out


if __name__ == "__main__":
    main()
