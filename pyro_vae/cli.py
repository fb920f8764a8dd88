"""``pyro-vae``: train, evaluate, sample, check, list.

Errors a user can cause print one line, ``error: ...``, and exit with status 2 (``--debug``
shows the traceback instead).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from . import config as cfg
from .errors import ConfigError, PyroVAEError
from .registry import GUIDES, LIKELIHOODS, OBJECTIVES, PRIORS

# flag -> config key, for the train command's shortcuts
FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "likelihood": "likelihood.name",
    "prior": "prior.name",
    "guide": "guide.name",
    "elbo": "objective.name",
    "num_particles": "objective.num_particles",
    "latent_dim": "model.latent_dim",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "lr_decay": "train.lr_decay",
    "beta": "train.beta",
    "kl_warmup_epochs": "train.kl_warmup_epochs",
    "device": "train.device",
    "seed": "train.seed",
}
DATA_HELP = (
    "digits (embedded, no files needed), binarized-mnist (binarized_mnist_{train,valid,test}.amat"
    "[.gz] in --data-dir) or mnist (IDX files train-/t10k-{images-idx3,labels-idx1}-ubyte[.gz] in --data-dir)"
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
    t.add_argument("--likelihood", help="bernoulli, gaussian, continuous_bernoulli")
    t.add_argument("--prior", help="see 'pyro-vae list'")
    t.add_argument("--guide", help="see 'pyro-vae list'")
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
    t.add_argument("--beta", type=float, help="weight of the KL term (1: the ELBO)")
    t.add_argument(
        "--kl-warmup-epochs",
        type=int,
        help="epochs of linear KL warm-up from 0 to beta",
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
    e.add_argument("--device", default="auto")
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
    s.add_argument("--num", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="PNG path (default: RUN_DIR/samples.png)")

    c = sub.add_parser("check", help="check every ELBO estimator against closed forms")
    c.add_argument("--device", default="cpu")

    li = sub.add_parser(
        "list", help="list the registered priors, guides, likelihoods, objectives"
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
    from . import data, plots
    from . import train as training
    from . import vae as vae_mod

    run_dir = Path(args.out)
    if args.resume:
        saved = run_dir / training.CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(
                f"nothing to resume in '{run_dir}': it has no {training.CONFIG_FILE}"
            )
        config = cfg.load(str(saved), overrides(args))
    else:
        if (run_dir / training.CHECKPOINT_FILE).exists() and not args.overwrite:
            raise ConfigError(
                f"'{run_dir}' already holds a run; pass --resume to continue it, --overwrite to "
                f"replace it, or another --out"
            )
        config = cfg.load(args.config, overrides(args))
    dataset = data.load(config.data)
    vae = vae_mod.build(config, dataset.data_dim)
    print(
        f"training on {dataset.name}: {len(dataset.train)} train / {len(dataset.test)} test images; "
        f"prior={config.prior.name} guide={config.guide.name} likelihood={config.likelihood.name} "
        f"objective={config.objective.name}; run directory {run_dir}"
    )
    metrics = training.fit(
        vae, dataset, config, run_dir, resume=args.resume, progress=not args.no_progress
    )
    for row in metrics[-1:]:
        print(
            f"epoch {row['epoch']}: train ELBO {row['train_elbo']:.2f}, test ELBO {row['test_elbo']:.2f} "
            f"(reconstruction {row['reconstruction']:.2f}, KL {row['kl']:.2f}) nats per data point"
        )
    vae.eval()
    device = next(vae.parameters()).device
    test = dataset.test[:10].to(device)
    plots.training_curves(metrics, run_dir / "elbo.png")
    plots.image_grid(
        [("data", test), ("reconstruction", vae.reconstruct(test))],
        dataset.image_shape,
        run_dir / "reconstructions.png",
    )
    plots.image_grid(
        [("samples from p(z)", vae.sample(10)), ("", vae.sample(10))],
        dataset.image_shape,
        run_dir / "samples.png",
    )
    print(
        f"wrote {run_dir}/: config.toml, metrics.jsonl, checkpoint.pt, elbo.png, "
        "reconstructions.png, samples.png"
    )


def evaluate(args: argparse.Namespace) -> None:
    from . import plots
    from .evaluate import evaluate as run_evaluation
    from .evaluate import load_run

    _, vae, dataset = load_run(Path(args.run_dir), args.device, best=args.best)
    x = dataset.split(args.split)
    if args.limit is not None:
        x = x[: args.limit]
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    for flag in ("ais_steps", "ais_chains"):
        if getattr(args, flag) < 1:
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} must be >= 1, got {getattr(args, flag)}")
    if args.bdmc < 0:
        raise ConfigError(f"--bdmc must be >= 0 simulated points, got {args.bdmc}")
    if args.method == "is" and (args.bdmc or args.amortization_gap):
        raise ConfigError("--bdmc and --amortization-gap need --method ais or both")
    x = x.to(next(vae.parameters()).device)
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
            vae, x, args.num_samples, method=args.method, ais_options=ais_options
        ),
    }
    run_dir = Path(args.run_dir)
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
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


def sample(args: argparse.Namespace) -> None:
    import pyro

    from . import plots
    from .evaluate import load_run

    _, vae, dataset = load_run(Path(args.run_dir), "cpu")
    pyro.set_rng_seed(args.seed)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples.png"
    images = vae.sample(args.num)
    per_row = 16
    rows = [
        ("" if i else "samples from p(z)", images[i : i + per_row])
        for i in range(0, args.num, per_row)
    ]
    plots.image_grid(rows, dataset.image_shape, out)
    print(f"wrote {out}")


def check(args: argparse.Namespace) -> int:
    from .checks import format_table, run_checks

    rows = run_checks(args.device)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def list_parts(args: argparse.Namespace) -> None:
    parts = {
        "priors": PRIORS,
        "guides": GUIDES,
        "likelihoods": LIKELIHOODS,
        "objectives": OBJECTIVES,
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
    try:
        return commands[args.command](args) or 0
    except PyroVAEError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the last finished epoch's checkpoint is intact: resume with --resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
