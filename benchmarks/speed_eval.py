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
from typing import Callable, Dict, List

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
from pyro_vae.marginal import log_marginal_likelihood  # noqa: E402
from pyro_vae.vae import VAE, build  # noqa: E402

MAX_PAIRS = (
    5_000  # (particle, image) pairs per chunk: one image with all K = 5000 draws
)
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


def library_estimate(vae: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    return log_marginal_likelihood(vae.model, vae.guide, x, num_samples=k).log_marginal


@torch.no_grad()
def torch_estimate(vae: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Plain PyTorch: per image, log-mean-exp of K importance weights (float64 sums), plus ESS and
    standard error, computed as the library does (the networks are called directly)."""
    rows = max(1, MAX_PAIRS // k)
    chunk = max(1, MAX_PAIRS // rows)
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


def library_estimate_small_chunks(vae: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The library with the plain sampler's chunking: ``max_pairs=5000`` (one image x K draws)."""
    return log_marginal_likelihood(
        vae.model, vae.guide, x, num_samples=k, max_pairs=MAX_PAIRS
    ).log_marginal


IMPLS: Dict[str, Callable[[VAE, torch.Tensor, int], torch.Tensor]] = {
    "library": library_estimate,
    "torch": torch_estimate,
    "library_max_pairs_5000": library_estimate_small_chunks,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(device: torch.device, n: int, k: int, rounds: int) -> Dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, x = make_vae(device), images(n, device)
    estimates = {name: fn(vae, x[:2], k) for name, fn in IMPLS.items()}  # warm-up
    rates: Dict[str, List[float]] = {name: [] for name in IMPLS}
    peak: Dict[str, int] = {}
    names = list(IMPLS)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            began = time.perf_counter()
            estimates[name] = IMPLS[name](vae, x, k)
            _sync(device)
            rates[name].append(n / (time.perf_counter() - began))
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device)
    out: Dict = {"device": device.type, "images": n, "num_samples": k, "rounds": rounds}
    for name in IMPLS:
        ratios = [a / b for a, b in zip(rates[name], rates["torch"])]
        out[name] = {
            "images_per_s": statistics.median(rates[name]),
            "ratio_vs_torch": statistics.median(ratios),
            "mean_log_marginal": estimates[name].mean().item(),
            "peak_memory_mb": (
                peak[name] / 2**20 if name in peak else child_peak_rss_mb(name, k)
            ),
        }
    return out


def child_peak_rss_mb(name: str, k: int) -> float:
    """Peak resident set added by one evaluation of 10 images, in a fresh CPU process (Linux)."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import speed_eval as s\n"
        "vae, x = s.make_vae(torch.device('cpu')), s.images(10, torch.device('cpu'))\n"
        f"s.IMPLS[{name!r}](vae, x[:1], 10)\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = s.status_kib('VmRSS')\n"
        f"s.IMPLS[{name!r}](vae, x, {k})\n"
        "print(s.status_kib('VmHWM') - before)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    except subprocess.CalledProcessError as err:
        print(
            f"peak memory of {name} not measured: {err.stderr.strip().splitlines()[-1]}",
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
    args = parser.parse_args(argv)
    devices = chosen_devices(parser, args)
    n = args.images or (50 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 3)
    results = []
    for device in devices:
        result = compare(
            device, n if device.type == "cpu" else 10 * n, args.num_samples, rounds
        )
        results.append(result)
        print(
            "  ".join(
                [f"{device.type:4s} K={args.num_samples}:"]
                + [
                    f"{name} {result[name]['images_per_s']:8.2f} images/s "
                    f"({result[name]['ratio_vs_torch']:.3f}x, "
                    f"peak {result[name]['peak_memory_mb']:.0f} MB)"
                    for name in IMPLS
                ]
            ),
            flush=True,
        )
    headline = results[-1]
    summary = {
        "ratio_vs_torch": headline["library"]["ratio_vs_torch"],
        "ratio_device": headline["device"],
        "results": results,
    }
    return finish(summary, args, argv)


if __name__ == "__main__":
    main()
