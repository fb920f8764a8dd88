"""``pyro-vae evaluate`` and ``pyro-vae sample``: the commands that read a trained run.

``evaluate`` estimates log p(x) by importance sampling (and AIS on request), writes
``evaluation.json`` and the bound-ladder plot; ``sample`` decodes draws from the prior into an
image grid. Under torchrun, evaluate shards the points over the ranks and rank 0 writes. The
heavy modules are imported inside the functions, so ``pyro-vae --help`` stays fast.
"""

import argparse
import json
import math
from pathlib import Path

from pyro_vae.config import check_device, check_seed
from pyro_vae.errors import ConfigError

MAX_SAMPLES = 1024  # images in one sample grid (64 rows of 16)
MAX_IMPORTANCE_SAMPLES = 1_000_000
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


def _existing_run(run_dir: Path, writable: bool) -> None:
    from pyro_vae.run import checkpoint

    if not run_dir.is_dir():
        raise ConfigError(
            f"no checkpoint at '{run_dir}': the run directory does not exist; train first "
            f"(pyro-vae train --out {run_dir})"
        )
    if writable:
        checkpoint.check_writable(run_dir)


def evaluate(args: argparse.Namespace) -> None:
    from pyro_vae.run import distributed

    try:
        _evaluate(args)
    finally:
        distributed.teardown()


def _evaluate(args: argparse.Namespace) -> None:
    """Evaluate; under torchrun the points are sharded over the ranks and rank 0 writes."""
    from pyro_vae.estimate.evaluate import evaluate as run_evaluation
    from pyro_vae.run import distributed, strategy
    from pyro_vae.run.checkpoint import atomic_write_text
    from pyro_vae.run.loading import load_run
    from pyro_vae.viz import plots

    check_device(args.device, "--device")
    if not 1 <= args.num_samples <= MAX_IMPORTANCE_SAMPLES:
        raise ConfigError(
            f"--num-samples must be between 1 and {MAX_IMPORTANCE_SAMPLES}, got "
            f"{args.num_samples}"
        )
    if args.limit is not None and args.limit < 2:
        raise ConfigError(
            f"--limit must be >= 2 (active units are a variance over data points), got "
            f"{args.limit}"
        )
    _existing_run(Path(args.run_dir), writable=distributed.main_process())
    _, vae, dataset = load_run(
        Path(args.run_dir), args.device, best=args.best, data_dir=args.data_dir
    )
    runner = strategy.start(next(vae.parameters()).device)
    vae.to(runner.device)
    x = vae.rows(dataset, args.split)  # with the columns a family appends
    labels = getattr(dataset, f"{args.split}_labels", None)
    if args.limit is not None:
        x = x[: args.limit]
        labels = None if labels is None else labels[: args.limit]
    for flag in ("ais_steps", "ais_chains"):
        if getattr(args, flag) < 1:
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} must be >= 1, got {getattr(args, flag)}")
    if args.bdmc < 0:
        raise ConfigError(f"--bdmc must be >= 0 simulated points, got {args.bdmc}")
    if args.method == "is" and (args.bdmc or args.amortization_gap):
        raise ConfigError("--bdmc and --amortization-gap need --method ais or both")
    x = x.to(runner.device)
    ais_options = dict(
        num_steps=args.ais_steps,
        num_chains=args.ais_chains,
        bdmc_points=args.bdmc,
        amortization_gap=args.amortization_gap,
    )
    result = {
        "split": args.split,
        "checkpoint": "best" if args.best else "last",
        **run_evaluation(
            vae,
            x,
            args.num_samples,
            shards=runner,
            method=args.method,
            ais_options=ais_options,
            labels=labels,
        ),
    }
    if not runner.is_main:
        return
    run_dir = Path(args.run_dir)
    atomic_write_text(run_dir / "evaluation.json", json.dumps(result, indent=2) + "\n")
    if result["kl_per_dim"] is not None:
        import torch

        plots.kl_per_dimension(
            torch.tensor(result["kl_per_dim"]), run_dir / "kl_per_dim.png"
        )
    ks = [int(k) for k in result["iwae"]] + [args.num_samples]
    values = [v["value"] for v in result["iwae"].values()] + [result["log_marginal"]]
    errors = [v["stderr"] or 0.0 for v in result["iwae"].values()] + [
        result["log_marginal_stderr"] or 0.0
    ]
    if result["log_marginal"] is None:  # --method ais: no K-sample IS estimate
        ks, values, errors = ks[:-1], values[:-1], errors[:-1]
    a = result.get("ais")
    plots.bound_ladder(
        ks,
        values,
        errors,
        result["elbo"],
        run_dir / "bound_ladder.png",
        ais=a and (a["value"], a["stderr"]),
        bdmc=a and "bdmc" in a and (a["bdmc"]["forward"], a["bdmc"]["reverse"]) or None,
    )
    if result["log_marginal"] is not None:
        print(
            f"{args.split} ({result['n']} images): {vae.marginal} ~= {result['log_marginal']:.2f} "
            f"± {result['log_marginal_stderr'] or float('nan'):.2f} nats (K={args.num_samples}), "
            f"ELBO {result['elbo']:.2f}, KL {result['kl']:.2f}, active units {result['active_units']}"
            + _information(result)
            + (
                f"; {result['bits_per_dim']:.4f} bits/dim"
                if "bits_per_dim" in result
                else ""
            )
        )
    if "classification" in result:
        c = result["classification"]
        print(f"test error of q(y|x): {c['error']:.2%} ± {c['stderr']:.2%}")
    if result["khat_max"] is not None:
        unreliable = result["khat_frac_above_0.7"]
        near = (
            f"; {result['khat_near_0.7']} of {result['n']} images within the fit's noise "
            f"(±{result['khat_noise']:.2f}) of 0.7, where k-hat cannot tell the side"
        )
        print(
            f"Pareto k-hat: max {result['khat_max']:.2f}, mean {result['khat_mean']:.2f}; "
            + (
                f"UNRELIABLE standard error: k-hat > 0.7 for {unreliable:.1%} of the images "
                f"(importance weights with infinite variance; the ± above is too small)"
                if unreliable > 0
                else "no k-hat above 0.7 (no sign of infinite-variance weights; k-hat "
                "alone cannot show the ± is right)"
            )
            + near
        )
    if a:
        print(
            f"AIS (T={a['num_steps']}, M={a['num_chains']}): {vae.marginal} ~= {a['value']:.2f} "
            f"± {a['stderr']:.2f} nats, acceptance {a['acceptance']:.2f}, {a['seconds']:.1f} s"
        )
        if "bdmc" in a:
            b = a["bdmc"]
            print(
                f"BDMC on {b['n']} simulated points: forward {b['forward']:.2f} <= {vae.marginal} "
                f"<= reverse {b['reverse']:.2f} (gap {b['gap']:.2f} nats)"
            )
        if "amortization" in a:
            g = a["amortization"]
            print(
                f"AIS - ELBO = approximation gap {g['approximation_gap']:.2f} + amortization "
                f"gap {g['amortization_gap']:.2f} nats (local ELBO {g['local_elbo']:.2f})"
            )
    print(f"wrote {run_dir}/evaluation.json, bound_ladder.png")


def _information(result: dict) -> str:
    """The mutual information part of the evaluate line, when it was computed."""
    if result.get("mutual_information") is None:
        return ""
    return (
        f", I(x; z) {result['mutual_information']:.2f} ± "
        f"{result['mutual_information_stderr']:.2f} nats "
        f"(on {result['mutual_information_points']} images: at most "
        f"log {result['mutual_information_points']} = "
        f"{math.log(result['mutual_information_points']):.2f})"
    )


def sample(args: argparse.Namespace) -> None:
    import pyro

    from pyro_vae.data.record import run_shape
    from pyro_vae.run.checkpoint import check_writable
    from pyro_vae.run.loading import load_run
    from pyro_vae.viz import plots

    if not 1 <= args.num <= MAX_SAMPLES:
        raise ConfigError(
            f"--num must be between 1 and {MAX_SAMPLES} (one grid of 16 images a row), got "
            f"{args.num}"
        )
    check_seed("--seed", args.seed)
    out = Path(args.out) if args.out else Path(args.run_dir) / "sample_grid.png"
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(
            f"--out '{out}' must end in {', '.join(IMAGE_SUFFIXES)} (the image format)"
        )
    if not out.parent.is_dir():
        raise ConfigError(
            f"--out '{out}': the directory '{out.parent}' does not exist; create it first"
        )
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a directory; give a file name")
    check_writable(out.parent)
    _existing_run(Path(args.run_dir), writable=False)
    _, vae, dataset = load_run(
        Path(args.run_dir), "cpu", data_dir=args.data_dir, need_data=False
    )
    pyro.set_rng_seed(args.seed)
    if args.label is None:
        images = vae.sample(args.num)
    elif not any(s.discrete for s in getattr(vae, "latent_sites", ())) and (
        getattr(vae, "condition", None) != "label"
    ):
        raise ConfigError(
            "--label draws a chosen class, and this run's family has no class latent y "
            "and no label condition; train with --family semi_supervised, or "
            "--family conditional --set model.condition=label"
        )
    else:
        images = vae.sample(args.num, label=args.label)
    title = (
        "samples from p(z)" if args.label is None else f"samples of class {args.label}"
    )
    per_row = 16
    rows = [
        ("" if i else title, images[i : i + per_row])
        for i in range(0, args.num, per_row)
    ]
    plots.image_grid(rows, run_shape(Path(args.run_dir), dataset), out)
    print(f"wrote {out}")
