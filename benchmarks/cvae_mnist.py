"""The CVAE quadrant task on labelled MNIST: complete an image from 1, 2 or 3 given quadrants,
the conditional VAE (``--family conditional``) beside the deterministic baseline
(``pyro_vae.models.baseline``) trained on the same task. Protocol: benchmarks/README.md,
"Labels".

Data: the t10k IDX images, thresholded at 0.5, split 8,000 / 2,000 by a permutation seeded
with 0 (``labels_mnist.load``). Reported per given-quadrant count, in nats per test image: the
negative conditional ELBO (Pyro's CVAE tutorial's figure), -log p(t | c) by importance
sampling (tighter), and the baseline's exact NLL -log p(t | c). Written to ``--json``.
"""

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from pyro_vae import config as cfg
from pyro_vae import models
from pyro_vae.estimate.diagnostics import elbo_terms
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.baseline import build_baseline, fit_baseline
from pyro_vae.run.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labels_mnist import load  # noqa: E402


def cvae_config(args, given: int):
    return cfg.load(
        None,
        {
            "model.family": "conditional",
            "model.given": given,
            "model.latent_dim": args.latent_dim,
            "model.hidden": args.hidden,
            "model.activation": "softplus",
            "train.epochs": args.epochs,
            "train.lr": args.lr,
            "train.device": "cpu",
        },
    )


def mean_and_stderr(values: torch.Tensor):
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def cvae_run(args, ds, given: int) -> dict:
    """Train the CVAE and its baseline for ``given`` quadrants (``--parts``: either alone);
    their test figures."""
    config = cvae_config(args, given)
    cvae = models.build(config, ds.shape)
    x = ds.test[: args.is_points]
    row = {"given_quadrants": given, "epochs": args.epochs, "points": len(x)}
    parts = args.parts.split(",")
    if "cvae" in parts:
        row.update(cvae_figures(args, config, cvae, ds, x))
    if "baseline" in parts:
        row.update(baseline_figures(args, config, cvae, ds, x))
    return row


def cvae_figures(args, config, cvae, ds, x) -> dict:
    began = time.perf_counter()
    metrics = fit(cvae, ds, config)
    seconds = time.perf_counter() - began
    cvae.eval()
    torch.manual_seed(0)
    elbo = elbo_terms(cvae, x, num_samples=args.elbo_draws)["elbo"]
    est = log_marginal_likelihood(cvae.model, cvae.guide, x, num_samples=args.k)
    elbo_mean, elbo_se = mean_and_stderr(elbo)
    return {
        "cvae_neg_conditional_elbo": -elbo_mean,
        "cvae_neg_conditional_elbo_se_over_images": elbo_se,
        "cvae_neg_log_p_is": -est.log_marginal.mean().item(),
        "cvae_is_stderr": math.sqrt((est.stderr**2).sum().item()) / len(x),
        "cvae_is_se_over_images": est.log_marginal.std().item() / math.sqrt(len(x)),
        "cvae_khat_max": None if est.khat is None else est.khat.max().item(),
        "cvae_khat_frac_above_0.7": (
            None if est.khat is None else (est.khat > 0.7).float().mean().item()
        ),
        "cvae_test_elbo_curve": [r.get("test_elbo") for r in metrics],
        "cvae_seconds": seconds,
        "_log_p_is": est.log_marginal,
    }


def baseline_figures(args, config, cvae, ds, x) -> dict:
    baseline = build_baseline(config, cvae)
    curve = []
    began = time.perf_counter()
    fit_baseline(
        baseline,
        ds.train,
        args.epochs,
        100,
        args.lr,
        seed=0,
        on_epoch=lambda epoch, nll: curve.append(
            -baseline.log_likelihood(x).mean().item()
        ),
    )
    seconds = time.perf_counter() - began
    nll = -baseline.log_likelihood(x)
    nll_mean, nll_se = mean_and_stderr(nll)
    return {
        "baseline_nll": nll_mean,
        "baseline_nll_se_over_images": nll_se,
        "baseline_train_nll": -baseline.log_likelihood(ds.train[: len(x)])
        .mean()
        .item(),
        "baseline_test_nll_curve": curve,
        "baseline_seconds": seconds,
        "_nll": nll,
    }


def paired(row: dict) -> dict:
    """The baseline's NLL less the CVAE's IS NLL, image by image (mean, SE), where both ran;
    the per-image tensors dropped."""
    log_p, nll = row.pop("_log_p_is", None), row.pop("_nll", None)
    if log_p is not None and nll is not None:
        row["paired_difference_baseline_minus_cvae_is"] = mean_and_stderr(nll + log_p)
    return row


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--k", type=int, default=100, help="importance samples per image")
    p.add_argument("--elbo-draws", type=int, default=10)
    p.add_argument("--is-points", type=int, default=2000)
    p.add_argument("--given", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--parts", default="cvae,baseline", help="cvae, baseline or both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="benchmarks/results/cvae_mnist.json")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load(Path(args.data_dir))
    began = time.perf_counter()
    result = {"command": " ".join(sys.argv), "settings": vars(args)}
    result["machine"] = {"cpu": platform.processor(), "torch": torch.__version__}
    result["cvae"] = [
        reported(paired(cvae_run(args, ds, given))) for given in args.given
    ]
    result["wall_seconds"] = time.perf_counter() - began
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def reported(row: dict) -> dict:
    """``row``, printed as one JSON line as soon as it is measured."""
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
