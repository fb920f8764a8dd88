"""What the per-epoch evaluation costs, as a share of the training time (issue: it must stay
under 5% by default).

Trains with ``pyro_vae.run.train.fit`` and times, in CPU time of this one-thread process,
every call of the per-epoch evaluation (``epoch_eval.EpochEvaluation.scores``) against the
rest of the run (training steps, checks, commits). Data: static binarized MNIST (50k/10k/10k,
``--data-dir``), or a 2,000-row data set (the first 2,000 rows of binarized MNIST's test file
as one array, split 1,800 / 200 by the array data set's seeded split), or the embedded digits.

    python benchmarks/eval_budget.py --data mnist --data-dir ../shared/data --epochs 2
    python benchmarks/eval_budget.py --data rows2000 --data-dir ../shared/data --epochs 30
    python benchmarks/eval_budget.py --data rows2000 --data-dir ../shared/data --epochs 30 \
        --set train.eval_every=1 --set train.eval_rows=0      # every row after every epoch

Prints one JSON object: rows per split, epochs, evaluations, the seconds of each part and
``eval_share`` = evaluation / training CPU seconds.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.models import build
from pyro_vae.run import epoch_eval, train


def dataset_overrides(args) -> dict:
    if args.data == "digits":
        return {}
    if args.data == "mnist":
        return {"data.dataset": "binarized-mnist", "data.data_dir": args.data_dir}
    rows = data.load(
        cfg.DataConfig(dataset="binarized-mnist", data_dir=args.data_dir)
    ).test[:2000]
    path = Path(tempfile.mkdtemp()) / "rows2000.npy"
    np.save(path, (rows.numpy() * 255).astype(np.uint8))
    return {"data.data_path": str(path)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["mnist", "rows2000", "digits"], default="digits")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(1)
    over = {"train.epochs": args.epochs, "train.device": "cpu"}
    over.update(dataset_overrides(args))
    for item in args.set:
        key, _, value = item.partition("=")
        over[key] = cfg.parse_value(value)
    config = cfg.load(None, over)
    ds = data.load(config.data)
    vae = build(config, ds.shape)
    spent = {"seconds": 0.0, "calls": 0}
    scores = epoch_eval.EpochEvaluation.scores

    def timed(self, model, seed):
        began = time.process_time()
        out = scores(self, model, seed)
        spent["seconds"] += time.process_time() - began
        spent["calls"] += 1
        return out

    epoch_eval.EpochEvaluation.scores = timed
    began = time.process_time()
    metrics = train.fit(vae, ds, config)
    total = time.process_time() - began
    training = total - spent["seconds"]
    print(
        json.dumps(
            {
                "data": args.data,
                "rows": {
                    "train": len(ds.train),
                    "valid": 0 if ds.valid is None else len(ds.valid),
                    "test": len(ds.test),
                },
                "overrides": {k: v for k, v in over.items() if k.startswith("train.")},
                "epochs": len(metrics),
                "evaluations": spent["calls"],
                "cpu_seconds_training": round(training, 3),
                "cpu_seconds_evaluation": round(spent["seconds"], 3),
                "eval_share": round(spent["seconds"] / training, 4),
                "last_test_elbo": metrics[-1]["test_elbo"],
            }
        )
    )


if __name__ == "__main__":
    main()
