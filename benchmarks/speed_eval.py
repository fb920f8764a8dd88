"""Evaluation speed: importance-sampled log p(x) with the library against a plain-PyTorch sampler.

The library side is ``pyro_vae.estimate.marginal.log_marginal_likelihood(vae.model, vae.guide, x, K)`` with
its default chunking, on the MNIST-sized net of Burda et al. (2016) (784-200-200-50, tanh,
Bernoulli pixels, diagonal Gaussian q). The plain-PyTorch side computes the same per-image
estimate, log (1/K) sum_k w_k with w_k = p(x, z_k) / q(z_k | x), and the same effective sample
size and standard error, with tensor ops on the same weights and the same budget of (particle,
image) pairs per chunk, and the library's own algebra for each term (see ``torch_estimate``:
the fair baseline, issue #25). Two comparisons:

- **one process** (the headline): both interleaved in rounds in one process (the order
  alternating), for each K in ``--num-samples`` (5000 and 100 by default; ``--images`` images
  at the largest K and proportionally more at smaller ones, so that every K does the same
  number of (particle, image) pairs) at the library's default budget and at each
  ``--max-pairs`` budget. Each round's time is the process's CPU time
  (``time.process_time``; use ``--threads 1``) on the CPU and wall time on CUDA.
  The library is called directly (no set-up by the benchmark: ``log_marginal_likelihood``
  prepares the heap and keeps its compiled chunks itself), as a user's Python calls it.
  ``ratio_vs_torch_by_k_and_budget`` holds the median of the rounds' ratios (library images/s
  over plain images/s), ``ratio_vs_fair_plain`` the one at the default budget per K, and
  ``ratio_vs_torch`` the one at the largest K and the default budget on the last device.
  On CUDA, ``torch.cuda.max_memory_allocated`` gives the peak memory.
- **fresh processes** (the CPU, largest K, default budget): pairs of child processes, the order
  alternating: the library called directly (it prepares the heap itself), the library with
  that preparation skipped, and the plain sampler; each evaluates two images (warm-up), then
  ``--images`` images, and reports images/s, page faults per image and the peak resident
  memory the evaluation added (VmHWM from /proc/self/status after resetting it through
  /proc/self/clear_refs, minus VmRSS before). Each process's heap starts empty, so what glibc
  does with each side's own pattern of 4-16 MB temporaries (reuse them, or hand them back to
  the OS and fault them in again) is part of the figure; this is what measures
  ``prepare_heap``.

    python benchmarks/speed_eval.py --quick --json benchmarks/results/speed_eval_cpu.json

``--chunk-costs`` instead measures what ``marginal.worth_compiling`` is fitted to: one chunk's
time eager and compiled (``marginal.ChunkWeights``, validation off as in
``log_marginal_likelihood``), interleaved, and the compilation's time, at several chunk shapes.
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
from pyro_vae.estimate.marginal import (  # noqa: E402
    ChunkWeights,
    default_max_pairs,
    log_marginal_likelihood,
)
from pyro_vae.models.vae import VAE, build  # noqa: E402
from pyro_vae.parts.likelihoods import SOFTPLUS_LINEAR  # noqa: E402
from pyro_vae.process import prepare_heap  # noqa: E402

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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
    """The fair plain sampler: per image, log-mean-exp of K importance weights (float64 sums),
    plus ESS and standard error, in chunks of at most ``max_pairs`` (particle, image) pairs
    (default: the library's default), with the networks called directly and the library's
    own algebra for each term (what ``BernoulliPixels``, ``ReparameterizedNormal`` and
    ``UnitNormal`` compute without gradients):

        log p(x | z) = x . l - sum_d softplus(l_d)    (one image: a matrix-vector product)
        log p(z)     = sum_d -z_d^2 / 2 - log(2 pi) / 2
        log q(z | x) = sum_d -eps_d^2 / 2 - log sigma_d - log(2 pi) / 2

    (Before issue #25 this baseline scored the pixels with BCE-with-logits, three full-size
    temporaries per chunk where the library makes one: 1.4-1.5 times slower, which flattered
    the library.)
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
        log_scale = scale.log()
        log_s1 = log_s2 = None
        for k0 in range(0, k, chunk):
            eps = torch.randn((min(chunk, k - k0),) + loc.shape, device=x.device)
            z = loc + eps * scale
            logits = vae.decoder(z)
            dot = logits @ xb[0] if xb.shape[0] == 1 else (logits * xb).sum(-1)
            log_px = dot - F.softplus(logits, threshold=SOFTPLUS_LINEAR).sum(-1)
            log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
            log_qz = (-0.5 * eps.pow(2) - log_scale - HALF_LOG_2PI).sum(-1)
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
    """Both implementations interleaved in rounds in this process (see the module docstring).
    The library is called directly, as a user's Python would call it: the benchmark does no
    set-up of its own (``log_marginal_likelihood`` prepares the heap itself, and the plain
    sampler, in the same process, shares it)."""
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
            clock = time.perf_counter if device.type == "cuda" else time.process_time
            began = clock()
            estimates[name] = fn(vae, x, k, max_pairs)
            _sync(device)
            rates[name].append(n / (clock() - began))
            faults[name].append((minor_page_faults() - faults_before) / n)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device)
    out: Dict = {
        "device": device.type,
        "images": n,
        "num_samples": k,
        "rounds": rounds,
        "clock": "wall" if device.type == "cuda" else "cpu",
        "default_max_pairs": default_max_pairs(device),
    }
    for name, (fn, max_pairs) in impls.items():
        ratios = [a / b for a, b in zip(rates[name], rates[baseline_of(name)])]
        out[name] = {
            "max_pairs": max_pairs or default_max_pairs(device),
            "images_per_s": statistics.median(rates[name]),
            "ratio_vs_torch_same_budget": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
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
{setup}
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


def fresh_process(
    function: str, n: int, k: int, max_pairs: Optional[int], skip_heap: bool = False
) -> Dict:
    """One evaluation of ``n`` images in a new CPU process (see the module docstring);
    ``skip_heap`` marks the heap as prepared without preparing it, so that the library's own
    ``process.prepare_heap`` does nothing (what it is worth)."""
    setup = (
        "from pyro_vae import process; process._heap_prepared = True"
        if skip_heap
        else ""
    )
    code = CHILD.format(
        setup=setup,
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
    kinds = {
        "library": ("library_estimate", False),
        "library_no_prepare_heap": ("library_estimate", True),
        "torch": ("torch_estimate", False),
    }
    runs: Dict[str, List[Dict]] = {name: [] for name in kinds}
    for pair in range(pairs):
        for name in list(kinds) if pair % 2 == 0 else list(kinds)[::-1]:
            function, heap = kinds[name]
            runs[name].append(fresh_process(function, n, k, None, heap))
    out: Dict = {"device": "cpu", "images": n, "num_samples": k, "pairs": pairs}
    for name, rows in runs.items():
        out[name] = {
            field: statistics.median(row[field] for row in rows)
            for field in ("images_per_s", "page_faults_per_image", "peak_added_mb")
        }
        out[name]["runs"] = rows
        ratios = [
            a["images_per_s"] / b["images_per_s"] for a, b in zip(rows, runs["torch"])
        ]
        out[name]["ratio_vs_torch"] = statistics.median(ratios)
        out[name]["pair_ratios"] = ratios
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


CHUNK_SHAPES = [(1, 1), (100, 1), (100, 10), (1000, 1), (100, 25), (2500, 1), (5000, 1)]


def chunk_costs(rounds: int) -> List[Dict]:
    """Per chunk shape (K, rows): eager and compiled ms per chunk (median of interleaved
    rounds, CPU time), the compilation's ms, and the chunks that repay it."""
    device = torch.device("cpu")
    vae = make_vae(device)
    out = []
    with pyro.validation_enabled(False):
        for k, rows in CHUNK_SHAPES:
            x = images(rows, device)
            eager = ChunkWeights(vae.model, vae.guide, compile=False)
            compiled = ChunkWeights(vae.model, vae.guide, compile=True, required=True)
            began = time.process_time()
            compiled(k, x)  # compiles, then evaluates once
            compile_ms = (time.process_time() - began) * 1e3
            calls = max(3, 2000 // (k * rows))
            fns = {"eager": eager, "compiled": compiled}
            ms: Dict[str, List[float]] = {name: [] for name in fns}
            for r in range(rounds):
                for name, fn in list(fns.items())[:: 1 if r % 2 == 0 else -1]:
                    began = time.process_time()
                    for _ in range(calls):
                        fn(k, x)
                    ms[name].append((time.process_time() - began) / calls * 1e3)
            e, c = statistics.median(ms["eager"]), statistics.median(ms["compiled"])
            row = {
                "num_samples": k,
                "rows": rows,
                "pairs": k * rows,
                "eager_ms": e,
                "compiled_ms": c,
                "compile_ms": compile_ms,
                "break_even_chunks": compile_ms / (e - c) if e > c else None,
            }
            out.append(row)
            print(
                f"pairs {k * rows:5d} (K {k}, rows {rows}): eager {e:.3f} ms, compiled "
                f"{c:.3f} ms per chunk; compiling {compile_ms:.0f} ms, repaid after "
                f"{row['break_even_chunks'] or float('inf'):.0f} chunks",
                flush=True,
            )
    return out


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
        "--num-samples",
        type=int,
        nargs="+",
        default=[5000, 100],
        help="values of K, importance samples per image",
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
        default=[1000, 2500],
        help="also compare library and plain sampler in one process at these chunk budgets "
        "((particle, image) pairs per chunk)",
    )
    parser.add_argument(
        "--chunk-costs",
        action="store_true",
        help="only measure one chunk eager and compiled, and compiling, at several shapes",
    )
    args = parser.parse_args(argv)
    if args.chunk_costs:
        chosen_devices(parser, args)  # applies --threads; chunk costs are the CPU's
        prepare_heap()
        rows = chunk_costs(args.rounds or (3 if args.quick else 8))
        return finish({"chunk_costs": rows}, args, argv)
    devices = chosen_devices(parser, args)
    n = args.images or (30 if args.quick else 100)
    rounds = args.rounds or (2 if args.quick else 5)
    pairs = args.pairs if args.pairs is not None else (2 if args.quick else 6)
    ks = sorted(args.num_samples, reverse=True)
    summary: Dict = {}
    if "cpu" in [d.type for d in devices] and pairs > 0:
        fresh = compare_fresh_processes(n, ks[0], pairs)
        summary["fresh_processes"] = fresh
        for name in ("library", "library_no_prepare_heap", "torch"):
            r = fresh[name]
            print(
                f"cpu  K={ks[0]} {name:24s} fresh processes: {r['images_per_s']:8.2f} "
                f"images/s ({r['ratio_vs_torch']:.3f}x), {r['page_faults_per_image']:7.0f} "
                f"page faults/image, peak +{r['peak_added_mb']:.0f} MB",
                flush=True,
            )
    results = []
    by_k: Dict[str, Dict[str, float]] = {}
    for device in devices:
        for k in ks:
            images_k = n * ks[0] // k * (1 if device.type == "cpu" else 10)
            result = compare(device, images_k, k, rounds, args.max_pairs)
            results.append(result)
            for name in implementations(args.max_pairs):
                r = result[name]
                if name.startswith("library"):
                    by_k.setdefault(str(k), {})[str(r["max_pairs"])] = r[
                        "ratio_vs_torch_same_budget"
                    ]
                print(
                    f"{device.type:4s} K={k:<5d} {name:24s} max_pairs {r['max_pairs']:6d}: "
                    f"{r['images_per_s']:9.2f} images/s ({r['ratio_vs_torch_same_budget']:.3f}x "
                    f"the plain sampler at that budget, rounds {r['ratio_min']:.2f}-"
                    f"{r['ratio_max']:.2f}), {r['page_faults_per_image']:.0f} page faults/image",
                    flush=True,
                )
    headline = [r for r in results if r["num_samples"] == ks[0]][-1]
    summary["one_process"] = results
    summary["ratio_vs_torch"] = headline["library"]["ratio_vs_torch_same_budget"]
    # the issue-#25 headline: direct call, one process, default budget, per K
    summary["ratio_vs_fair_plain"] = {
        str(r["num_samples"]): r["library"]["ratio_vs_torch_same_budget"]
        for r in results
        if r["device"] == headline["device"]
    }
    summary["ratio_vs_torch_by_k_and_budget"] = by_k
    summary["ratio_device"] = headline["device"]
    if "fresh_processes" in summary:
        fresh = summary["fresh_processes"]
        summary["ratio_vs_torch_fresh_processes"] = fresh["library"]["ratio_vs_torch"]
        summary["prepare_heap_speedup_fresh_processes"] = (
            fresh["library"]["images_per_s"]
            / fresh["library_no_prepare_heap"]["images_per_s"]
        )
    return finish(summary, args, argv)


if __name__ == "__main__":
    main()
