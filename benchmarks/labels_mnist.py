"""Labelled MNIST: the semi-supervised VAE (M2) against a supervised-only classifier of the same
network, the cost of enumerating y against sampling it, and the CVAE quadrant task against a
deterministic baseline. Protocol and commands: benchmarks/README.md, "Labels".

Data: the 10,000 t10k IDX images with their labels (the static binarized training files carry
no labels), thresholded at 0.5 (or, ``--source binarized``, the static binarized test file),
split 8,000 / 2,000 with a seeded permutation (seed 0); ``--extra-unlabelled`` adds the 50,000
static binarized training images as unlabelled rows.
Every number is written to ``--json`` with the settings and the wall time of each run.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pyro_vae import config as cfg
from pyro_vae import models
from pyro_vae.data import from_splits
from pyro_vae.data.builtin import read_amat, read_idx
from pyro_vae.data.labels import UNLABELLED
from pyro_vae.estimate.classification import classification_error
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.labels import keep_labels
from pyro_vae.run.train import fit


def load(data_dir: Path, seed: int = 0, source: str = "threshold", extra: bool = False):
    """The 10,000 labelled t10k images, split 8,000 / 2,000 by a permutation seeded with
    ``seed``. ``source`` "threshold": the grey IDX images thresholded at 0.5; "binarized":
    the static binarized test file, which is the t10k set stably sorted by label, put back in
    the IDX order (so both sources split the same images). ``extra``: the 50,000 static
    binarized training images (MNIST training images, none of them in the test split)
    appended to the training rows with the label ``UNLABELLED`` (-1)."""
    labels = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").long()
    if source == "binarized":
        by_label = read_amat(data_dir / "binarized_mnist_test.amat.gz").numpy()
        x = np.empty_like(
            by_label
        )  # back in the IDX order: the same split as "threshold"
        x[np.argsort(labels.numpy(), kind="stable")] = by_label
    else:
        images = read_idx(data_dir / "t10k-images-idx3-ubyte.gz").flatten(1).float()
        x = (images / 255 > 0.5).float().numpy()
    order = torch.randperm(10_000, generator=torch.Generator().manual_seed(seed))
    tr, te = order[:8000].numpy(), order[8000:].numpy()
    train, train_labels = x[tr], labels[tr].numpy()
    name = f"mnist-t10k-{source}-8000-2000"
    if extra:
        unlabelled = read_amat(data_dir / "binarized_mnist_train.amat.gz").numpy()
        train = np.concatenate([train, unlabelled])
        train_labels = np.concatenate(
            [train_labels, np.full(len(unlabelled), UNLABELLED)]
        )
        name += f"+{len(unlabelled)}-unlabelled"
    return from_splits(
        name,
        {"train": train.reshape(-1, 1, 28, 28), "test": x[te].reshape(-1, 1, 28, 28)},
        {"train": train_labels, "test": labels[te].numpy()},
    )


def m2_config(args, labels: int, seed: int, objective: str = "enum"):
    return cfg.load(
        None,
        {
            "model.family": "semi_supervised",
            "objective.name": objective,
            "model.labels": labels,
            "model.alpha": args.alpha,
            "train.beta": args.beta,
            "model.labelled_every": args.labelled_every,
            "model.latent_dim": args.latent_dim,
            "model.hidden": args.hidden,
            "model.activation": "softplus",
            "train.epochs": args.epochs,
            "train.lr": args.lr,
            "train.seed": seed,
            "train.device": "cpu",
        },
    )


def supervised(args, ds, labels: int, seed: int) -> float:
    """The same classifier network (trunk + linear) trained on the kept labels alone
    (cross-entropy, Adam, ``--sup-steps`` full-batch steps); its test error."""
    config = m2_config(args, labels, seed)
    classifier = models.build(config, ds.shape).classifier
    column, _ = keep_labels(ds.train_labels, 10, labels, seed)
    kept = column >= 0
    x, y = ds.train[kept], column[kept]
    opt = torch.optim.Adam(classifier.parameters(), lr=args.lr)
    for _ in range(args.sup_steps):
        opt.zero_grad()
        F.cross_entropy(classifier(x), y).backward()
        opt.step()
    with torch.no_grad():
        return (classifier(ds.test).argmax(-1) != ds.test_labels).float().mean().item()


def m2_run(args, ds, labels: int, seed: int) -> dict:
    config = m2_config(args, labels, seed)
    family = models.build(config, ds.shape)
    by_epoch = []

    def track(row: dict) -> None:  # q(y | x)'s test error after each epoch
        by_epoch.append(classification_error(family, ds.test, ds.test_labels)["error"])

    began = time.perf_counter()
    metrics = fit(family, ds, config, on_epoch=track)
    seconds = time.perf_counter() - began
    error = classification_error(family, ds.test, ds.test_labels)
    torch.manual_seed(seed)
    est = log_marginal_likelihood(
        family.model, family.guide, ds.test[: args.is_points], num_samples=args.k
    )
    return {
        "labels": labels,
        "seed": seed,
        "epochs": args.epochs,
        "m2_error": error["error"],
        "m2_error_stderr": error["stderr"],
        "m2_error_by_epoch": by_epoch,
        "labelled_every": args.labelled_every,
        "alpha": args.alpha,
        "beta": args.beta,
        "supervised_error": supervised(args, ds, labels, seed),
        "test_elbo": metrics[-1]["test_elbo"],
        "log_px_is": est.log_marginal.mean().item(),
        "log_px_points": args.is_points,
        "seconds": seconds,
    }


def epoch_cost(args, ds) -> dict:
    """CPU seconds (this process) per training epoch of M2 (100 labels) with y enumerated
    (enum) and sampled (trace: a score-function estimate), in ``--cost-rounds`` interleaved
    rounds (enum then trace in each), so a change in the machine's load falls on both; the
    per-epoch ELBO scoring is cut to 10 rows."""
    configs = {}
    for objective in ("enum", "trace"):
        extra = {"objective.jit": False} if objective == "trace" else {}
        base = flat(m2_config(args, 100, 0, objective))
        configs[objective] = cfg.load(
            None, {**base, **extra, "train.epochs": 1, "train.eval_rows": 10}
        )
    seconds = {objective: [] for objective in configs}
    for _ in range(args.cost_rounds):
        for objective, config in configs.items():
            family = models.build(config, ds.shape)
            began = time.process_time()
            fit(family, ds, config)
            seconds[objective].append(time.process_time() - began)
    ratios = [e / t for e, t in zip(seconds["enum"], seconds["trace"])]
    return {
        "enum_over_trace": sorted(ratios)[len(ratios) // 2],
        "ratios": ratios,
        "cpu_seconds": seconds,
    }


def flat(config) -> dict:
    return {
        f"{section}.{key}": value
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }


def cvae_run(args, ds, given: int) -> dict:
    """The CVAE quadrant task, with this script's settings: benchmarks/cvae_mnist.py, the
    CVAE's own benchmark (run that for the figures in benchmarks/README.md)."""
    import cvae_mnist

    mine = {k: v for k, v in vars(args).items() if k not in ("parts", "json")}
    both = {**vars(cvae_mnist.parser().parse_args([])), **mine}
    return cvae_mnist.paired(cvae_mnist.cvae_run(argparse.Namespace(**both), ds, given))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[256])
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--alpha", type=float, default=0.1, help="[model] alpha (paper: 0.1)"
    )
    p.add_argument(
        "--beta",
        type=float,
        default=1.0,
        help="[train] beta, the weight of z's KL (M2's y term keeps weight 1)",
    )
    p.add_argument(
        "--labelled-every",
        type=int,
        default=4,
        help="[model] labelled_every: every k-th batch labelled rows (0: mixed)",
    )
    p.add_argument(
        "--source",
        choices=["threshold", "binarized"],
        default="threshold",
        help="the t10k images thresholded at 0.5, or the static binarized test file",
    )
    p.add_argument(
        "--extra-unlabelled",
        action="store_true",
        help="add the 50,000 static binarized training images as unlabelled rows",
    )
    p.add_argument("--cost-rounds", type=int, default=3)
    p.add_argument("--sup-steps", type=int, default=300)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--is-points", type=int, default=2000)
    p.add_argument(
        "--m2-runs",
        default="100:0,100:1,100:2,600:0,1000:0",
        help="LABELS:SEED pairs of the M2 runs",
    )
    p.add_argument("--parts", default="cost,m2,cvae")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="benchmarks/results/labels_mnist.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load(Path(args.data_dir), source=args.source, extra=args.extra_unlabelled)
    began = time.perf_counter()
    result = {"command": " ".join(sys.argv), "settings": vars(args)}
    result["machine"] = {"cpu": platform.processor(), "torch": torch.__version__}
    parts = args.parts.split(",")
    if "cost" in parts:
        result["epoch_seconds"] = epoch_cost(args, ds)
        print("epoch seconds", result["epoch_seconds"], flush=True)
    if "m2" in parts:
        runs = [tuple(map(int, r.split(":"))) for r in args.m2_runs.split(",")]
        result["m2"] = []
        for labels, seed in runs:
            result["m2"].append(m2_run(args, ds, labels, seed))
            print(result["m2"][-1], flush=True)
    if "cvae" in parts:
        result["cvae"] = []
        for given in (1, 2, 3):
            result["cvae"].append(cvae_run(args, ds, given))
            print(result["cvae"][-1], flush=True)
    result["wall_seconds"] = time.perf_counter() - began
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
