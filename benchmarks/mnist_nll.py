"""Train and evaluate configurations on statically binarized MNIST; append rows to
``benchmarks/results/mnist_nll.json``.

    python benchmarks/mnist_nll.py --config mnist --epochs 100
    python benchmarks/mnist_nll.py --config mnist_iwae --epochs 30 --set objective.num_particles=50
    python benchmarks/mnist_nll.py --config mnist --set model.family=hierarchical \
        --set model.latent_layers=[40,40] --ais-subset 100       # any family; AIS on a subset

Each configuration trains in its own run directory (``--run-root``, default ``runs/mnist``);
an interrupted run resumes from its checkpoint when the command is repeated. Test log p(x) is
importance-sampled with ``--num-samples`` (default 5000) draws per image; ``nll`` = -log p(x)
in nats, averaged over the test images (``--subset N``: a seeded random subset of N).
"""

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from pyro_vae import config as cfg
from pyro_vae import data as data_mod
from pyro_vae.cli.app import overrides as cli_overrides
from pyro_vae.estimate.evaluate import ais_evaluation, evaluate
from pyro_vae.models import build
from pyro_vae.run import checkpoint
from pyro_vae.run import train as training

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mnist_nll.json"


# copied from evaluation.json into each row: how far to trust the SE, and I(x; z) under q
DIAGNOSTICS = (
    "khat_max",
    "khat_mean",
    "khat_frac_above_0.7",
    "mutual_information",
    "mutual_information_stderr",
    "mutual_information_points",
)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="packaged config name or TOML file")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument(
        "--subset",
        type=int,
        help="evaluate a random subset of N test images (fixed seed 0; the file's order is not random)",
    )
    p.add_argument(
        "--ais-subset",
        type=int,
        default=0,
        help="also AIS (--ais-steps, 16 chains) on the first N evaluated images",
    )
    p.add_argument("--ais-steps", type=int, default=500)
    p.add_argument("--run-root", default=str(ROOT / "runs" / "mnist"))
    p.add_argument(
        "--name", help="run directory name (default: derived from the config)"
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    flags = argparse.Namespace(
        set=args.set, data_dir=args.data_dir, epochs=args.epochs, device=args.device
    )
    config = cfg.load(args.config, cli_overrides(flags))
    name = args.name or "-".join(
        [
            Path(args.config).stem,
            *([config.model.family] if config.model.family != "vae" else []),
            config.prior.name,
            config.guide.name,
            config.objective.name,
            f"e{config.train.epochs}",
        ]
    )
    run_dir = Path(args.run_root) / name
    dataset = data_mod.load(config.data)
    vae = build(config, dataset.shape)
    began, cpu_began = time.perf_counter(), time.process_time()
    first_epoch = None  # the epoch this invocation resumed from (None: it trained none)
    last = run_dir / training.CHECKPOINT_FILE
    state = checkpoint.load(last) if last.exists() else None
    # trained already: evaluate only
    if state is not None and state["epoch"] >= config.train.epochs:
        vae.load_state_dict(state["model"])
        metrics = state["metrics"]
    else:
        first_epoch = state["epoch"] if state is not None else 0
        metrics = training.fit(
            vae,
            dataset,
            config,
            run_dir,
            resume=state is not None,
            progress=sys.stderr.isatty(),
        )
    train_seconds = time.perf_counter() - began
    train_cpu_seconds = time.process_time() - cpu_began
    epochs_trained = 0 if first_epoch is None else len(metrics) - first_epoch
    print(f"{name}: trained, test ELBO {metrics[-1]['test_elbo']:.2f}", flush=True)

    # the epoch with the highest validation ELBO (early stopping without touching the test set)
    best = (run_dir / training.BEST_FILE).exists()
    if best:
        state = checkpoint.load(
            run_dir / training.BEST_FILE, map_location=next(vae.parameters()).device
        )
        vae.load_state_dict(state["model"])
        best_epoch = state["epoch"]
    vae.eval()
    device = next(vae.parameters()).device
    test = dataset.test
    if args.subset:
        test = test[
            torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[
                : args.subset
            ]
        ]
    test = test.to(device)
    began, cpu_began = time.perf_counter(), time.process_time()
    result = evaluate(vae, test, num_samples=args.num_samples, ladder=())
    eval_seconds = time.perf_counter() - began
    eval_cpu_seconds = time.process_time() - cpu_began
    if args.ais_subset:
        result["ais"] = ais_evaluation(
            vae, test[: args.ais_subset], num_steps=args.ais_steps
        )
        result["ais"]["n"] = min(args.ais_subset, len(test))
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    row = {
        "family": config.model.family,
        "latent_layers": list(config.model.latent_layers) or None,
        "inference": config.model.inference if config.model.family != "vae" else None,
        "prior": config.prior.name,
        "guide": config.guide.name,
        "objective": config.objective.name,
        "num_particles": config.objective.options.get("num_particles", 1),
        "nll": -result["log_marginal"],
        "nll_stderr": result["log_marginal_stderr"],
        "test_elbo": result["elbo"],
        "kl": result["kl"],
        "active_units": result["active_units"],
        "layers": {
            k: {"kl": v["kl"], "active_units": v["active_units"]}
            for k, v in (result.get("layers") or {}).items()
        },
        "ais": result.get("ais"),
        **{k: result.get(k) for k in DIAGNOSTICS},
        "num_samples": args.num_samples,
        "test_images": (
            result["n"]
            if not args.subset
            else f"random {result['n']} of {len(dataset.test)} (seed 0)"
        ),
        "epochs": config.train.epochs,
        "evaluated_epoch": best_epoch if best else config.train.epochs,
        "selection": "best validation ELBO" if best else "last epoch",
        "seconds_per_epoch": sum(m["seconds"] for m in metrics) / len(metrics),
        "train_seconds_this_invocation": train_seconds,
        "eval_seconds": eval_seconds,
        # CPU time of this process (all its threads): training (this invocation), per epoch
        # trained in it (null when it trained none), and the IS evaluation
        "train_cpu_seconds_this_invocation": train_cpu_seconds,
        "cpu_seconds_per_epoch": (
            train_cpu_seconds / epochs_trained if epochs_trained else None
        ),
        "eval_cpu_seconds": eval_cpu_seconds,
        "device": (
            str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
        ),
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date": datetime.date.today().isoformat(),
        "config": config.to_dict(),
        "command": "python " + " ".join(sys.argv),
    }
    results = Path(args.results)
    rows = json.loads(results.read_text()) if results.exists() else []
    rows.append(row)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: row[k]
                for k in (
                    "prior",
                    "guide",
                    "objective",
                    "nll",
                    "nll_stderr",
                    "epochs",
                    "seconds_per_epoch",
                    "eval_seconds",
                )
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
