"""Evaluation speed: importance-sampled log p(x) with the library against a plain-PyTorch sampler.

The library side is ``pyro_vae.marginal.log_marginal_likelihood(vae.model, vae.guide, x, K)`` with
its default chunking, on the MNIST-sized net of Burda et al. (2016) (784-200-200-50, tanh,
Bernoulli pixels, diagonal Gaussian q). The plain-PyTorch side computes the same per-image
estimate, log (1/K) sum_k w_k with w_k = p(x, z_k) / q(z_k | x), and the same effective sample
size and standard error, with tensor ops on the same weights and the same budget of (particle,
image) pairs per chunk. Both run interleaved in one process; images/s is the median over rounds.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` around each run; on the CPU, the peak
resident set of a fresh child process that evaluates 10 images once (``VmHWM`` from
/proc/self/status after resetting it through /proc/self/clear_refs), minus its resident set before.

    python benchmarks/speed_eval.py --quick --json benchmarks/results/speed_eval_cpu.json
"""

import argparse
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_train import (  # noqa: E402,E501
    DATA_DIM,
    HIDDEN,
    LATENT,
    add_common_arguments,
    chosen_devices,
    finish,
)

from pyro_vae import config as config_module  # noqa: E402
from pyro_vae.marginal import default_max_pairs, log_marginal_likelihood  # noqa: E402
from pyro_vae.vae import VAE, build  # noqa: E402

LOG_2PI = math.log(2 * math.pi)


def make_vae(device: torch.device) -> VAE:
    config = config_module.load(
        None, {"model.latent_dim": LATENT, "model.hidden": list(HIDDEN)}
    )
    return build(config, DATA_DIM).to(device).eval()


def images(n: int, device: torch.device) -> torch.Tensor:
    return (
        (torch.rand(n, DATA_DIM, generator=torch.Generator().manual_seed(1)) < 0.2)
        .float()
        .to(device)
    )


def library_estimate(
    vae: VAE, x: torch.Tensor, k: int, max_pairs: Optional[int] = None
) -> torch.Tensor:
    """The library; ``max_pairs=None`` is its default chunking for ``x``'s device."""
    return log_marginal_likelihood(
        vae.model, vae.guide, x, num_samples=k, max_pairs=max_pairs
    ).log_marginal


@torch.no_grad()
def torch_estimate(
    vae: VAE, x: torch.Tensor, k: int, max_pairs: Optional[int] = None
) -> torch.Tensor:
    """Plain PyTorch: per image, log-mean-exp of K importance weights (float64 sums), plus ESS and
    standard error, computed as the library does (the networks are called directly), in chunks
    of at most ``max_pairs`` (particle, image) pairs (default: the library's default).
    """
    max_pairs = max_pairs or default_max_pairs(x.device)
    rows = max(1, max_pairs // k)
    chunk = max(1, max_pairs // rows)
    enc = vae.encoder
    out = []
    for start in range(0, x.shape[0], rows):
        xb = x[start : start + rows]
        h = enc.trunk(xb)
        loc, scale = enc.loc(h), F.softplus(enc.raw_scale(h)) + 1e-5
        log_s1 = log_s2 = None
        for k0 in range(0, k, chunk):
            eps = torch.randn((min(chunk, k - k0),) + loc.shape, device=x.device)
            z = loc + scale * eps
            log_px = -F.binary_cross_entropy_with_logits(
                vae.decoder(z), xb.expand(z.shape[0], -1, -1), reduction="none"
            ).sum(-1)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            log_qz = -(0.5 * (eps.pow(2) + LOG_2PI) + scale.log()).sum(-1)
            log_w = (log_px + log_pz - log_qz).double()
            s1, s2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
            log_s1 = s1 if log_s1 is None else torch.logaddexp(log_s1, s1)
            log_s2 = s2 if log_s2 is None else torch.logaddexp(log_s2, s2)
        ess = torch.exp(2 * log_s1 - log_s2)
        # computed, as the library does, though only the estimate is returned
        stderr = ((k / ess - 1).clamp(min=0) / (k - 1)).sqrt()  # noqa: F841
        out.append(log_s1 - math.log(k))
    return torch.cat(out)


Estimator = Callable[[VAE, torch.Tensor, int, Optional[int]], torch.Tensor]
ESTIMATORS: Dict[str, Estimator] = {
    "library": library_estimate,
    "torch": torch_estimate,
}


def implementations(budgets: List[int]) -> Dict[str, Tuple[Estimator, Optional[int]]]:
    """``library`` and ``torch`` at the library's default chunk budget, then both at each budget
    in ``budgets`` (``library_max_pairs_B``, ``torch_max_pairs_B``)."""
    impls: Dict[str, Tuple[Estimator, Optional[int]]] = {
        name: (fn, None) for name, fn in ESTIMATORS.items()
    }
    for budget in budgets:
        for name, fn in ESTIMATORS.items():
            impls[f"{name}_max_pairs_{budget}"] = (fn, budget)
    return impls


def baseline_of(name: str) -> str:
    """The plain-PyTorch run a library run is compared with: the same chunk budget."""
    return name.replace("library", "torch")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    device: torch.device, n: int, k: int, rounds: int, budgets: List[int]
) -> Dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, x = make_vae(device), images(n, device)
    impls = implementations(budgets)
    estimates = {name: fn(vae, x[:2], k, mp) for name, (fn, mp) in impls.items()}
    rates: Dict[str, List[float]] = {name: [] for name in impls}
    peak: Dict[str, int] = {}
    names = list(impls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, max_pairs = impls[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            began = time.perf_counter()
            estimates[name] = fn(vae, x, k, max_pairs)
            _sync(device)
            rates[name].append(n / (time.perf_counter() - began))
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device)
    out: Dict = {
        "device": device.type,
        "images": n,
        "num_samples": k,
        "rounds": rounds,
        "default_max_pairs": default_max_pairs(device),
    }
    for name, (fn, max_pairs) in impls.items():
        base = baseline_of(name)
        ratios = [a / b for a, b in zip(rates[name], rates[base])]
        out[name] = {
            "max_pairs": max_pairs or default_max_pairs(device),
            "images_per_s": statistics.median(rates[name]),
            "ratio_vs_torch_same_budget": statistics.median(ratios),
            "mean_log_marginal": estimates[name].mean().item(),
            "peak_memory_mb": (
                peak[name] / 2**20
                if name in peak
                else child_peak_rss_mb(fn.__name__, k, max_pairs)
            ),
        }
    return out


def child_peak_rss_mb(function: str, k: int, max_pairs: Optional[int]) -> float:
    """Peak resident set added by one evaluation of 10 images, in a fresh CPU process (Linux)."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import speed_eval as s\n"
        "vae, x = s.make_vae(torch.device('cpu')), s.images(10, torch.device('cpu'))\n"
        f"s.{function}(vae, x[:1], 10)\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = s.status_kib('VmRSS')\n"
        f"s.{function}(vae, x, {k}, {max_pairs})\n"
        "print(s.status_kib('VmHWM') - before)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    except subprocess.CalledProcessError as err:
        print(
            f"peak memory of {function} not measured: {err.stderr.strip().splitlines()[-1]}",
            file=sys.stderr,
        )
        return float("nan")
    return int(done.stdout.split()[-1]) / 1024


def status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak since the reset)."""
    line = next(
        line
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(field)
    )
    return int(line.split()[1])


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 images, 2 rounds")
    add_common_arguments(parser)
    parser.add_argument(
        "--images", type=int, help="images per round (default 50 quick, 200 full)"
    )
    parser.add_argument(
        "--num-samples", type=int, default=5000, help="K, importance samples per image"
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds (default 2 quick, 3 full)"
    )
    parser.add_argument(
        "--max-pairs",
        type=int,
        nargs="*",
        default=[],
        help="also compare library and plain sampler at these chunk budgets "
        "((particle, image) pairs per chunk)",
    )
    args = parser.parse_args(argv)
    devices = chosen_devices(parser, args)
    n = args.images or (50 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 3)
    results = []
    for device in devices:
        result = compare(
            device,
            n if device.type == "cpu" else 10 * n,
            args.num_samples,
            rounds,
            args.max_pairs,
        )
        results.append(result)
        for name in implementations(args.max_pairs):
            r = result[name]
            print(
                f"{device.type:4s} K={args.num_samples} {name:24s} max_pairs {r['max_pairs']:6d}: "
                f"{r['images_per_s']:8.2f} images/s ({r['ratio_vs_torch_same_budget']:.3f}x the "
                f"plain sampler at that budget), peak {r['peak_memory_mb']:.0f} MB",
                flush=True,
            )
    headline = results[-1]
    summary = {
        "ratio_vs_torch": headline["library"]["ratio_vs_torch_same_budget"],
        "ratio_device": headline["device"],
        "results": results,
    }
    return finish(summary, args, argv)


if __name__ == "__main__":
    main()
