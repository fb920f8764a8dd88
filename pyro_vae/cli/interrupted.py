"""The one line a command prints when SIGINT or SIGTERM stops it: for ``train``, what the run
directory kept and how to resume it."""

import argparse
from pathlib import Path

from pyro_vae.errors import PyroVAEError


def interrupted(args: argparse.Namespace) -> str:
    """The one line printed after SIGINT/SIGTERM: for train, what was kept and how to resume."""
    if args.command != "train":
        return "interrupted"
    if not getattr(args, "fitting", False):
        return "interrupted while starting; nothing was written"
    from pyro_vae.run import checkpoint, rundir

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
