"""``pyro-vae``: train, evaluate, sample, check, list.

Errors a user can cause print one line, ``error: ...``, and exit with status 2; faults of the
environment (a full or read-only disk) exit with status 1 (``--debug`` shows the traceback
instead). SIGINT and SIGTERM stop a command cleanly: a training run keeps its last committed
epoch and says how to resume it.
"""

import argparse
import json
import math
import signal
import sys
from pathlib import Path
from typing import Dict, List, Optional

from . import _startup  # noqa: F401  (Ctrl-C while torch imports: one line)
from . import config as cfg
from .errors import ConfigError, PyroVAEError
from .registry import DATASETS, GUIDES, LIKELIHOODS, NETWORKS, OBJECTIVES, PRIORS

# flag -> config key, for the train command's shortcuts
FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "data_path": "data.data_path",
    "image_size": "data.image_size",
    "likelihood": "likelihood.name",
    "prior": "prior.name",
    "guide": "guide.name",
    "network": "network.name",
    "elbo": "objective.name",
    "num_particles": "objective.num_particles",
    "latent_dim": "model.latent_dim",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "lr_decay": "train.lr_decay",
    "beta": "train.beta",
    "kl_warmup_epochs": "train.kl_warmup_epochs",
    "kl_schedule": "train.kl_schedule",
    "kl_cycles": "train.kl_cycles",
    "kl_cycle_ratio": "train.kl_cycle_ratio",
    "free_bits": "train.free_bits",
    "reconstruction_weight": "train.reconstruction_weight",
    "device": "train.device",
    "seed": "train.seed",
}
MAX_SAMPLES = 1024  # images in one sample grid (64 rows of 16)
MAX_IMPORTANCE_SAMPLES = 1_000_000
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")
DATA_HELP = (
    "a registered data set; 'pyro-vae list' shows them and what each reads (default: the "
    "embedded digits)"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyro-vae", description="Variational autoencoders with Pyro."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE (defaults: the embedded digits data)")
    t.add_argument(
        "--config",
        help="a TOML file, or the name of a packaged config (see 'pyro-vae list')",
    )
    t.add_argument("--dataset", help=DATA_HELP)
    t.add_argument("--data-dir", help="directory holding the data set's files")
    t.add_argument("--data-path", help="the .npy/.npz file of --dataset array")
    t.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="--dataset images: resize every image to H x W pixels",
    )
    t.add_argument("--likelihood", help="bernoulli, gaussian, continuous_bernoulli")
    t.add_argument("--prior", help="see 'pyro-vae list'")
    t.add_argument("--guide", help="see 'pyro-vae list'")
    t.add_argument(
        "--network",
        help="mlp (sized by model.hidden) or conv (options: --set network.channels=[32,64])",
    )
    t.add_argument("--elbo", help="trace, meanfield or iwae")
    t.add_argument(
        "--num-particles", type=int, help="samples per data point for the objective"
    )
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument(
        "--lr-decay",
        type=float,
        help="per-epoch learning-rate factor: epoch e uses lr * lr_decay^(e-1) (default 1)",
    )
    t.add_argument(
        "--beta",
        type=float,
        help="weight of the KL term (1: the ELBO); with --elbo iwae it tempers "
        "log p(z) - log q(z|x) inside each importance weight instead (a warning says so)",
    )
    t.add_argument(
        "--kl-warmup-epochs",
        type=int,
        help="epochs of linear KL warm-up from 0 to beta",
    )
    t.add_argument(
        "--kl-schedule", help="linear (warm-up, default) or cyclical (Fu et al. 2019)"
    )
    t.add_argument("--kl-cycles", type=int, help="cyclical: cycles over the run")
    t.add_argument(
        "--kl-cycle-ratio",
        type=float,
        help="cyclical: share of each cycle spent rising to beta (default 0.5)",
    )
    t.add_argument(
        "--free-bits",
        type=float,
        help="nats of KL per latent dimension that cost nothing (Kingma et al. 2016)",
    )
    t.add_argument(
        "--reconstruction-weight",
        type=float,
        help="weight of the reconstruction term (1: the ELBO)",
    )
    t.add_argument("--device", help="auto (CUDA when available), cpu, cuda")
    t.add_argument("--seed", type=int)
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any config value, e.g. --set guide.num_flows=4 (repeatable)",
    )
    t.add_argument(
        "--out", default="runs/default", help="run directory (default: runs/default)"
    )
    t.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out"
    )
    t.add_argument(
        "--overwrite", action="store_true", help="replace an existing run in --out"
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser(
        "evaluate", help="log p(x) by importance sampling, bounds and diagnostics"
    )
    e.add_argument("run_dir")
    e.add_argument(
        "--num-samples",
        type=int,
        default=1000,
        help="importance samples K per data point",
    )
    e.add_argument("--split", default="test", help="test, valid or train")
    e.add_argument("--limit", type=int, help="evaluate only the first N data points")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument(
        "--data-dir",
        help="read the data from here (when the files moved since training)",
    )
    e.add_argument(
        "--best",
        action="store_true",
        help="use the epoch with the highest validation ELBO (best.pt) instead of the last",
    )
    e.add_argument(
        "--method",
        choices=["is", "ais", "both"],
        default="is",
        help="log p(x) by importance sampling, annealed importance sampling, or both",
    )
    e.add_argument(
        "--ais-steps", type=int, default=500, help="AIS annealing steps T (default 500)"
    )
    e.add_argument(
        "--ais-chains", type=int, default=16, help="AIS chains M per data point"
    )
    e.add_argument(
        "--bdmc",
        type=int,
        default=0,
        metavar="N",
        help="with AIS: forward and reverse AIS on N points simulated from the model",
    )
    e.add_argument(
        "--amortization-gap",
        action="store_true",
        help="with AIS: split AIS - ELBO by fitting a local q per data point",
    )

    s = sub.add_parser("sample", help="decode draws from the prior into an image grid")
    s.add_argument("run_dir")
    s.add_argument(
        "--num", type=int, default=32, help=f"images to draw (1 to {MAX_SAMPLES})"
    )
    s.add_argument("--seed", type=int, default=0, help="in [0, 2**32)")
    s.add_argument(
        "--out",
        help="a .png, .pdf or .svg path (default: RUN_DIR/sample_grid.png; train's "
        "samples.png is kept)",
    )
    s.add_argument(
        "--data-dir",
        help="read the data from here (when the files moved since training)",
    )

    c = sub.add_parser(
        "check", help="check every objective, guide, prior and SE against closed forms"
    )
    c.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")

    li = sub.add_parser(
        "list",
        help="list the registered priors, guides, likelihoods, objectives, data sets",
    )
    li.add_argument("--json", action="store_true")
    return p


def overrides(args: argparse.Namespace) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for flag, key in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--set '{item}' must look like SECTION.KEY=VALUE, e.g. --set train.epochs=5"
            )
        out[key.strip()] = cfg.parse_value(value.strip())
    return out


def train(args: argparse.Namespace) -> None:
    """Train; under torchrun every rank trains, and only rank 0 holds the run directory's
    lock, writes, prints and plots."""
    from . import distributed, rundir

    if args.resume and args.overwrite:
        raise ConfigError(
            "--resume continues the run in --out and --overwrite replaces it: pass one"
        )
    main = distributed.main_process()
    try:
        with rundir.opened(Path(args.out) if main else None) as run:
            _train(args, run, main)
    finally:
        distributed.teardown()


def _train(args: argparse.Namespace, run, main: bool) -> None:
    from . import data, data_record, distributed
    from . import train as training
    from . import vae as vae_mod
    from .figures import write_figures

    run_dir = Path(args.out)
    if distributed.restarted() and (run_dir / training.CHECKPOINT_FILE).is_file():
        args.resume = (
            True  # torchrun restarted the workers: continue from the checkpoint
        )
    if args.resume:
        saved = run_dir / training.CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(
                f"nothing to resume in '{run_dir}': it has no {training.CONFIG_FILE}"
            )
        config = cfg.load(args.config or str(saved), overrides(args))
        if run is not None:  # before loading data: a changed config, a finished run
            run.check_resume(config)
    else:
        if run is not None and run.has_run() and not args.overwrite:
            raise ConfigError(
                f"'{run_dir}' already holds a run; pass --resume to continue it, --overwrite to "
                f"replace it, or another --out"
            )
        config = cfg.load(args.config, overrides(args))
    dataset = data.load(config.data)
    cfg.check_size(config, dataset.data_dim)
    vae = vae_mod.build(config, dataset.shape)
    say = print if main else lambda *a, **k: None
    say(
        f"training on {dataset.name}: {len(dataset.train)} train / {len(dataset.test)} test images; "
        f"prior={config.prior.name} guide={config.guide.name} likelihood={config.likelihood.name} "
        f"objective={config.objective.name}; run directory {run_dir}"
    )
    args.fitting = True  # from here on a Ctrl-C reports what the run directory keeps
    metrics = training.fit(
        vae,
        dataset,
        config,
        run_dir,
        resume=args.resume,
        progress=main and not args.no_progress,
    )
    if not main:
        return
    data_record.write(run_dir, config.data, dataset)
    for row in metrics[-1:]:
        print(
            f"epoch {row['epoch']}: train ELBO {row['train_elbo']:.2f}, test ELBO {row['test_elbo']:.2f} "
            f"(reconstruction {row['reconstruction']:.2f}, KL {row['kl']:.2f}) nats per data point"
        )
    device = next(vae.parameters()).device
    written = write_figures(
        vae,
        dataset.test.to(device),
        dataset.shape,
        run_dir,
        dataset.test_labels,
        metrics,
    )
    print(
        f"wrote {run_dir}/: config.toml, metrics.jsonl, checkpoint.pt, data.json, "
        + ", ".join(p.name for p in written)
    )


def _existing_run(run_dir: Path, writable: bool) -> None:
    from . import rundir

    if not run_dir.is_dir():
        raise ConfigError(
            f"no checkpoint at '{run_dir}': the run directory does not exist; train first "
            f"(pyro-vae train --out {run_dir})"
        )
    if writable:
        rundir.check_writable(run_dir)


def evaluate(args: argparse.Namespace) -> None:
    from . import distributed

    try:
        _evaluate(args)
    finally:
        distributed.teardown()


def _evaluate(args: argparse.Namespace) -> None:
    """Evaluate; under torchrun the points are sharded over the ranks and rank 0 writes."""
    from . import distributed, plots
    from .checkpoint import atomic_write_text
    from .evaluate import evaluate as run_evaluation
    from .evaluate import load_run

    cfg.check_device(args.device, "--device")
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
    ctx = distributed.setup(next(vae.parameters()).device)
    vae.to(ctx.device)
    x = dataset.split(args.split)
    if args.limit is not None:
        x = x[: args.limit]
    for flag in ("ais_steps", "ais_chains"):
        if getattr(args, flag) < 1:
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} must be >= 1, got {getattr(args, flag)}")
    if args.bdmc < 0:
        raise ConfigError(f"--bdmc must be >= 0 simulated points, got {args.bdmc}")
    if args.method == "is" and (args.bdmc or args.amortization_gap):
        raise ConfigError("--bdmc and --amortization-gap need --method ais or both")
    x = x.to(ctx.device)
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
            ctx=ctx,
            method=args.method,
            ais_options=ais_options,
        ),
    }
    likelihood = vae.likelihood
    if getattr(likelihood, "binary", False) or getattr(likelihood, "discrete", False):
        # bits per dimension, as image papers report: -log p(x) / (D ln 2)
        best = result["log_marginal"]
        if best is None:  # --method ais
            best = result["ais"]["value"]
        result["bits_per_dim"] = -best / (x.shape[1] * math.log(2))
    if not ctx.is_main:
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
            f"{args.split} ({result['n']} images): log p(x) ~= {result['log_marginal']:.2f} "
            f"± {result['log_marginal_stderr'] or float('nan'):.2f} nats (K={args.num_samples}), "
            f"ELBO {result['elbo']:.2f}, KL {result['kl']:.2f}, active units {result['active_units']}"
            + _information(result)
            + (
                f"; {result['bits_per_dim']:.4f} bits/dim"
                if "bits_per_dim" in result
                else ""
            )
        )
    if result["khat_max"] is not None:
        unreliable = result["khat_frac_above_0.7"]
        print(
            f"Pareto k-hat: max {result['khat_max']:.2f}, mean {result['khat_mean']:.2f}; "
            + (
                f"UNRELIABLE standard error: k-hat > 0.7 for {unreliable:.1%} of the images "
                f"(importance weights with infinite variance; the ± above is too small)"
                if unreliable > 0
                else "standard errors reliable (k-hat <= 0.7 everywhere)"
            )
        )
    if a:
        print(
            f"AIS (T={a['num_steps']}, M={a['num_chains']}): log p(x) ~= {a['value']:.2f} "
            f"± {a['stderr']:.2f} nats, acceptance {a['acceptance']:.2f}, {a['seconds']:.1f} s"
        )
        if "bdmc" in a:
            b = a["bdmc"]
            print(
                f"BDMC on {b['n']} simulated points: forward {b['forward']:.2f} <= log p(x) "
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

    from . import plots
    from .data_record import run_shape
    from .evaluate import load_run
    from .rundir import check_writable

    if not 1 <= args.num <= MAX_SAMPLES:
        raise ConfigError(
            f"--num must be between 1 and {MAX_SAMPLES} (one grid of 16 images a row), got "
            f"{args.num}"
        )
    cfg.check_seed("--seed", args.seed)
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
    images = vae.sample(args.num)
    per_row = 16
    rows = [
        ("" if i else "samples from p(z)", images[i : i + per_row])
        for i in range(0, args.num, per_row)
    ]
    plots.image_grid(rows, run_shape(Path(args.run_dir), dataset), out)
    print(f"wrote {out}")


def check(args: argparse.Namespace) -> int:
    from .checks import format_table, run_checks
    from .train import resolve_device

    cfg.check_device(args.device, "--device")
    resolve_device(args.device)
    rows = run_checks(args.device)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def list_parts(args: argparse.Namespace) -> None:
    cfg.register_parts()
    parts = {
        "priors": PRIORS,
        "guides": GUIDES,
        "likelihoods": LIKELIHOODS,
        "objectives": OBJECTIVES,
        "networks": NETWORKS,
        "datasets": DATASETS,
    }
    if args.json:
        print(json.dumps({k: r.names() for k, r in parts.items()}))
        return
    for kind, registry in parts.items():
        print(f"{kind}:")
        for name in registry.names():
            doc = (registry.get(name).__doc__ or "").strip().splitlines()[0]
            options = ", ".join(
                f"{k}={v!r}" for k, v in registry.defaults(name).items()
            )
            print(
                f"  {name:22s} {doc}" + (f"  [options: {options}]" if options else "")
            )
    print(
        "packaged configs (use with --config NAME):", ", ".join(cfg.packaged_configs())
    )


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    commands = {
        "train": train,
        "evaluate": evaluate,
        "sample": sample,
        "check": check,
        "list": list_parts,
    }
    stopped = {"signal": signal.SIGINT}

    def on_term(signum, frame):
        stopped["signal"] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return commands[args.command](args) or 0
    except PyroVAEError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_status", 2)
    except OSError as err:  # the environment: a full disk, a file system gone read-only
        if args.debug:
            raise
        where = f" '{err.filename}'" if err.filename else ""
        print(f"error:{where} {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{_interrupted(args)}", file=sys.stderr)
        return 128 + stopped["signal"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(args: argparse.Namespace) -> str:
    """The one line printed after SIGINT/SIGTERM: for train, what was kept and how to resume."""
    if args.command != "train":
        return "interrupted"
    if not getattr(args, "fitting", False):
        return "interrupted while starting; nothing was written"
    from . import checkpoint, rundir

    out = Path(args.out)
    try:
        rundir.settle(out)  # a signal between the commit and metrics.jsonl: repair now
        epoch = checkpoint.load(out / rundir.CHECKPOINT_FILE, need=("epoch",))["epoch"]
    except (PyroVAEError, OSError):
        return (
            f"interrupted before the first epoch finished; nothing to resume in '{out}'"
        )
    return (
        f"interrupted; '{out}' keeps the checkpoint of epoch {epoch}: continue with "
        f"pyro-vae train --out {out} --resume"
    )


if __name__ == "__main__":
    sys.exit(main())
