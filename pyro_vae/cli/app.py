"""``pyro-vae``: train, evaluate, sample, check, list.

Errors a user can cause print one line, ``error: ...``, and exit with status 2; faults of the
environment (a full or read-only disk) exit with status 1 (``--debug`` shows the traceback
instead). SIGINT and SIGTERM stop a command cleanly: a training run keeps its last committed
epoch and says how to resume it.

The commands live in modules named after them: ``train`` (train), ``evaluate`` (evaluate,
sample), ``check`` (check) and ``list`` (list); each imports torch and Pyro inside its
functions, so ``pyro-vae --help`` does not. ``interrupted`` writes the line a signal ends with.
"""

import argparse
import os
import signal
import sys
from typing import List, Optional

import pyro_vae.cli._startup  # noqa: F401  (Ctrl-C while torch imports: one line)
from pyro_vae import __version__
from pyro_vae.cli.check import check
from pyro_vae.cli.evaluate import MAX_SAMPLES, evaluate, sample
from pyro_vae.cli.help import formatter
from pyro_vae.cli.interrupted import interrupted
from pyro_vae.cli.list import list_parts
from pyro_vae.cli.train import (  # noqa: F401  (FLAGS, overrides: re-exported)
    FLAGS,
    overrides,
    train,
)
from pyro_vae.errors import PyroVAEError

DATA_HELP = "a registered data set ('pyro-vae list' says what each reads)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyro-vae", description="Variational autoencoders with Pyro."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action="version", version=f"pyro-vae {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a VAE (defaults: the embedded digits data)",
        formatter_class=formatter(FLAGS),
    )
    t.add_argument(
        "--config",
        help="a TOML file, or the name of a packaged config (see 'pyro-vae list')",
    )
    t.add_argument("--dataset", help=DATA_HELP)
    t.add_argument("--data-dir", help="directory holding the data set's files")
    t.add_argument(
        "--data-path", help="a .npy/.npz file of your own (implies --dataset array)"
    )
    t.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="--dataset images: resize every image to H x W pixels",
    )
    t.add_argument(
        "--likelihood",
        help="p(x|z); data.binarize = auto binarizes the data for bernoulli only",
    )
    t.add_argument("--family", help="the model family ('pyro-vae list' describes each)")
    t.add_argument("--prior", help="p(z) ('pyro-vae list' describes each)")
    t.add_argument("--guide", help="q(z|x) ('pyro-vae list' describes each)")
    t.add_argument(
        "--network",
        help="encoder and decoder (mlp is sized by model.hidden; conv's options: --set "
        "network.channels=[32,64])",
    )
    t.add_argument("--elbo", help="the training objective")
    t.add_argument(
        "--num-particles", type=int, help="samples per data point for the objective"
    )
    t.add_argument("--latent-dim", type=int, help="dimensions of z")
    t.add_argument("--epochs", type=int, help="passes over the training set")
    t.add_argument("--batch-size", type=int, help="data points per SVI step")
    t.add_argument("--lr", type=float, help="Adam's learning rate")
    t.add_argument(
        "--lr-decay",
        type=float,
        help="per-epoch learning-rate factor: epoch e uses lr * lr_decay^(e-1)",
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
        "--kl-schedule", help="linear (warm-up) or cyclical (Fu et al. 2019)"
    )
    t.add_argument("--kl-cycles", type=int, help="cyclical: cycles over the run")
    t.add_argument(
        "--kl-cycle-ratio",
        type=float,
        help="cyclical: share of each cycle spent rising to beta",
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
    t.add_argument("--device", help="auto (CUDA when available), cpu, cuda, cuda:N")
    t.add_argument("--seed", type=int, help="seeds the initial weights and every draw")
    t.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a better validation ELBO (0: off; "
        "best.pt keeps the best epoch)",
    )
    t.add_argument(
        "--eval-every",
        type=int,
        help="epochs between the test/validation ELBOs (0: auto, within ~5%% of the "
        "training time; the last epoch is always scored)",
    )
    t.add_argument(
        "--eval-rows",
        type=int,
        help="score the ELBO on a fixed seeded subset of this many rows per split (0: all)",
    )
    t.add_argument(
        "--labels",
        type=float,
        help="semi_supervised: labels kept, N (balanced over classes) or a fraction",
    )
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
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none when not on a terminal)",
    )
    t.add_argument(
        "--tensorboard",
        action="store_const",
        const=True,
        help="log scalars, figures and the config to OUT/tensorboard/ (needs tensorboard)",
    )

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
        "--label", type=int, help="draw this class (families with a class latent y)"
    )
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
    except (
        BrokenPipeError
    ):  # the reader went away (pyro-vae list | head): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # the environment: a full disk, a file system gone read-only
        if args.debug:
            raise
        where = f" '{err.filename}'" if err.filename else ""
        print(f"error:{where} {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(interrupted(args), file=sys.stderr)
        return 128 + stopped["signal"]
    finally:
        signal.signal(signal.SIGTERM, previous)
