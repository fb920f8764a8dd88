"""A CIFAR-like check without CIFAR: MNIST digits tinted in colour, 3 x 32 x 32 uint8.

    python benchmarks/tinted_digits.py --threads 1                 # make the .npz, train, report
    python benchmarks/tinted_digits.py --make-only --npz /tmp/tinted.npz

Each MNIST t10k image (``t10k-images-idx3-ubyte.gz`` in ``--data-dir``) is padded to 32 x 32 and
painted with two random colours, one for the background and one for the stroke (a seeded draw
per image): ``pixel = background * (1 - g) + stroke * g`` per channel, g the grey level in [0, 1],
rounded to uint8. The first ``--train`` images are the training split, the last ``--test`` the
test split (saved as ``train``/``test`` arrays of shape (N, 3, 32, 32), with ``*_labels``).

Training goes through the Python API by hand (a ``Dataset`` of rows k/255, ``build`` with the
(3, 32, 32) shape, ``fit``), with the ``conv`` network and the ``discretized_logistic``
likelihood; the test log p(x) is importance-sampled (``log_marginal_likelihood``) and reported in
bits per dimension, -log p(x) / (3072 ln 2), appended to ``results/tinted_digits.json``.
"""

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from pyro_vae import config as cfg
from pyro_vae.data import Dataset
from pyro_vae.data.builtin import read_idx
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.vae import build
from pyro_vae.run.train import fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tinted_digits.json"
SHAPE = (3, 32, 32)


def tint(grey: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 28, 28) uint8 grey digits -> (N, 3, 32, 32) uint8 colour images."""
    rng = np.random.default_rng(seed)
    n = len(grey)
    g = np.pad(grey, ((0, 0), (2, 2), (2, 2))).astype(np.float64) / 255
    background = rng.integers(0, 256, (n, 3, 1, 1)) * 0.5  # darker backgrounds
    stroke = rng.integers(0, 256, (n, 3, 1, 1))
    images = background * (1 - g[:, None]) + stroke * g[:, None]
    return np.rint(images).astype(np.uint8)


def make(data_dir: Path, npz: Path, train: int, test: int) -> None:
    images = read_idx(data_dir / "t10k-images-idx3-ubyte.gz").numpy()
    labels = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").numpy()
    if train + test > len(images):
        raise SystemExit(f"--train + --test must be at most {len(images)}")
    colour = tint(images)
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        npz,
        train=colour[:train],
        train_labels=labels[:train],
        test=colour[-test:],
        test_labels=labels[-test:],
    )


def as_rows(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float rows k/255 of length C * H * W."""
    return torch.from_numpy(images.reshape(len(images), -1)).float() / 255


def main(argv: Optional[List[str]] = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--npz", default=str(ROOT / "runs" / "tinted_digits.npz"))
    p.add_argument("--train", type=int, default=9000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--make-only", action="store_true")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--components", type=int, default=1, help="logistics per pixel")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--num-samples", type=int, default=100, help="K for log p(x)")
    p.add_argument("--subset", type=int, default=200, help="test images evaluated")
    p.add_argument("--threads", type=int)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    npz = Path(args.npz)
    make(Path(args.data_dir), npz, args.train, args.test)
    if args.make_only:
        return {}

    arrays = np.load(npz)
    dataset = Dataset(
        "tinted-digits", as_rows(arrays["train"]), as_rows(arrays["test"]), (32, 32)
    )
    overrides = {
        "network.name": "conv",
        "likelihood.name": "discretized_logistic",
        "likelihood.num_components": args.components,
        "model.latent_dim": args.latent_dim,
        "train.epochs": args.epochs,
        "train.device": "cpu",
    }
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = cfg.parse_value(value)
    config = cfg.load(None, overrides)
    vae = build(config, SHAPE)
    began = time.perf_counter()
    metrics = fit(vae, dataset, config)
    train_seconds = time.perf_counter() - began
    vae.eval()
    x = dataset.test[: args.subset]
    began = time.perf_counter()
    estimate = log_marginal_likelihood(
        vae.model, vae.guide, x, num_samples=args.num_samples
    )
    eval_seconds = time.perf_counter() - began
    d = math.prod(SHAPE)
    log_p = estimate.log_marginal.mean().item()
    stderr = (estimate.stderr.pow(2).sum().sqrt() / len(x)).item()
    row = {
        "network": config.network.name,
        "network_options": config.network.options,
        "likelihood": config.likelihood.name,
        "num_components": args.components,
        "latent_dim": args.latent_dim,
        "train_images": len(dataset.train),
        "epochs": args.epochs,
        "test_images": len(x),
        "num_samples": args.num_samples,
        "log_marginal_nats": log_p,
        "log_marginal_stderr": stderr,
        "bits_per_dim": -log_p / (d * math.log(2)),
        "bits_per_dim_stderr": stderr / (d * math.log(2)),
        "test_elbo_nats": metrics[-1]["test_elbo"],
        "elbo_bits_per_dim": -metrics[-1]["test_elbo"] / (d * math.log(2)),
        "seconds_per_epoch": train_seconds / args.epochs,
        "eval_seconds": eval_seconds,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/tinted_digits.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(json.dumps(row, indent=2))
    results = Path(args.results)
    rows = json.loads(results.read_text()) if results.exists() else []
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows + [row], indent=2) + "\n")
    return row


if __name__ == "__main__":
    main()
