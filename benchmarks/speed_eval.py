"""Evaluation speed: importance-sampled log p(x) with the library against a plain-PyTorch sampler.

The library side is ``pyro_vae.marginal.log_marginal_likelihood(vae.model, vae.guide, x, K)`` with
its default chunking, on the MNIST-sized net of Burda et al. (2016) (784-200-200-50, tanh,
Bernoulli pixels, diagonal Gaussian q). The plain-PyTorch side computes the same per-image
estimate, log (1/K) sum_k w_k with w_k = p(x, z_k) / q(z_k | x), and the same effective sample
size and standard error, with tensor ops on the same weights and the same budget of (particle,
image) pairs per chunk. Two comparisons:

- **fresh processes** (the CPU): pairs of child processes, one per implementation, the order
  alternating; each evaluates two images (warm-up), then ``--images`` images, and reports
  images/s, page faults per image and the peak resident memory the evaluation added (VmHWM from
  /proc/self/status after resetting it through /proc/self/clear_refs, minus VmRSS before). Each
  process's heap starts empty, so what glibc does with each side's own pattern of 4-16 MB
  temporaries (reuse them, or hand them back to the OS and fault them in again) is part of
  the figure.
- **one process**: both interleaved in rounds in one process (the order alternating), at the
  library's default budget and at each ``--max-pairs`` budget; images/s and page faults per
  image. The headline ``ratio_vs_torch`` is the median of the rounds' ratios at the library's
  default budget on the last device. On CUDA this is the only comparison, with
  ``torch.cuda.max_memory_allocated`` as the peak memory.

    python benchmarks/speed_eval.py --quick --json benchmarks/results/speed_eval_cpu.json
"""

import argparse
import json
import math
import resource
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
    """Both implementations interleaved in rounds in this process (see the module docstring)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, x = make_vae(device), images(n, device)
    impls = implementations(budgets)
    estimates = {name: fn(vae, x[:2], k, mp) for name, (fn, mp) in impls.items()}
    rates: Dict[str, List[float]] = {name: [] for name in impls}
    faults: Dict[str, List[float]] = {name: [] for name in impls}
    peak: Dict[str, int] = {}
    names = list(impls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, max_pairs = impls[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            faults_before = minor_page_faults()
            began = time.perf_counter()
            estimates[name] = fn(vae, x, k, max_pairs)
            _sync(device)
            rates[name].append(n / (time.perf_counter() - began))
            faults[name].append((minor_page_faults() - faults_before) / n)
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
        ratios = [a / b for a, b in zip(rates[name], rates[baseline_of(name)])]
        out[name] = {
            "max_pairs": max_pairs or default_max_pairs(device),
            "images_per_s": statistics.median(rates[name]),
            "ratio_vs_torch_same_budget": statistics.median(ratios),
            "round_ratios": ratios,
            "page_faults_per_image": statistics.median(faults[name]),
            "mean_log_marginal": estimates[name].mean().item(),
        }
        if name in peak:
            out[name]["peak_memory_mb"] = peak[name] / 2**20
    return out


CHILD = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
import speed_eval as s
torch.set_num_threads({threads})
cpu = torch.device("cpu")
vae, x = s.make_vae(cpu), s.images({n}, cpu)
s.{function}(vae, x[:2], {k}, {max_pairs})
open("/proc/self/clear_refs", "w").write("5")
before, faults = s.status_kib("VmRSS"), s.minor_page_faults()
began = time.perf_counter()
s.{function}(vae, x, {k}, {max_pairs})
seconds = time.perf_counter() - began
print(json.dumps({{
    "images_per_s": {n} / seconds,
    "page_faults_per_image": (s.minor_page_faults() - faults) / {n},
    "peak_added_mb": (s.status_kib("VmHWM") - before) / 1024,
}}))
"""


def fresh_process(function: str, n: int, k: int, max_pairs: Optional[int]) -> Dict:
    """One evaluation of ``n`` images in a new CPU process (see the module docstring)."""
    code = CHILD.format(
        here=str(Path(__file__).resolve().parent),
        threads=torch.get_num_threads(),
        function=function,
        n=n,
        k=k,
        max_pairs=max_pairs,
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def compare_fresh_processes(n: int, k: int, pairs: int) -> Dict:
    """``pairs`` pairs of fresh processes at the library's default budget, the order alternating."""
    runs: Dict[str, List[Dict]] = {"library": [], "torch": []}
    functions = {"library": "library_estimate", "torch": "torch_estimate"}
    for pair in range(pairs):
        for name in list(runs) if pair % 2 == 0 else list(runs)[::-1]:
            runs[name].append(fresh_process(functions[name], n, k, None))
    out: Dict = {"device": "cpu", "images": n, "num_samples": k, "pairs": pairs}
    ratios = [
        a["images_per_s"] / b["images_per_s"]
        for a, b in zip(runs["library"], runs["torch"])
    ]
    for name, rows in runs.items():
        out[name] = {
            field: statistics.median(row[field] for row in rows)
            for field in ("images_per_s", "page_faults_per_image", "peak_added_mb")
        }
        out[name]["runs"] = rows
    out["library"]["ratio_vs_torch"] = statistics.median(ratios)
    out["library"]["pair_ratios"] = ratios
    return out


def minor_page_faults() -> int:
    """Minor page faults of this process so far (memory touched for the first time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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
    parser.add_argument(
        "--quick", action="store_true", help="fewer images, rounds and process pairs"
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--images",
        type=int,
        help="images per round or process (default 30 quick, 100 full)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=5000, help="K, importance samples per image"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds in one process (default 2 quick, 5 full)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        help="pairs of fresh processes on the CPU (default 2 quick, 6 full; 0 skips them)",
    )
    parser.add_argument(
        "--max-pairs",
        type=int,
        nargs="*",
        default=[],
        help="also compare library and plain sampler in one process at these chunk budgets "
        "((particle, image) pairs per chunk)",
    )
    args = parser.parse_args(argv)
    devices = chosen_devices(parser, args)
    n = args.images or (30 if args.quick else 100)
    rounds = args.rounds or (2 if args.quick else 5)
    pairs = args.pairs if args.pairs is not None else (2 if args.quick else 6)
    k = args.num_samples
    summary: Dict = {}
    if "cpu" in [d.type for d in devices] and pairs > 0:
        fresh = compare_fresh_processes(n, k, pairs)
        summary["fresh_processes"] = fresh
        for name in ("library", "torch"):
            r = fresh[name]
            print(
                f"cpu  K={k} {name:8s} fresh processes: {r['images_per_s']:8.2f} images/s, "
                f"{r['page_faults_per_image']:7.0f} page faults/image, "
                f"peak +{r['peak_added_mb']:.0f} MB",
                flush=True,
            )
        print(f"cpu  fresh processes: ratio {fresh['library']['ratio_vs_torch']:.3f}")
    results = []
    for device in devices:
        result = compare(
            device, n if device.type == "cpu" else 10 * n, k, rounds, args.max_pairs
        )
        results.append(result)
        for name in implementations(args.max_pairs):
            r = result[name]
            print(
                f"{device.type:4s} K={k} {name:24s} max_pairs {r['max_pairs']:6d}: "
                f"{r['images_per_s']:8.2f} images/s ({r['ratio_vs_torch_same_budget']:.3f}x the "
                f"plain sampler at that budget, one process), "
                f"{r['page_faults_per_image']:.0f} page faults/image",
                flush=True,
            )
    headline = results[-1]
    summary["one_process"] = results
    summary["ratio_vs_torch"] = headline["library"]["ratio_vs_torch_same_budget"]
    summary["ratio_device"] = headline["device"]
    if "fresh_processes" in summary:
        fresh = summary["fresh_processes"]["library"]["ratio_vs_torch"]
        summary["ratio_vs_torch_fresh_processes"] = fresh
    return finish(summary, args, argv)


if __name__ == "__main__":
    main()
