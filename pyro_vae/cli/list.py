"""``pyro-vae list``: the registered priors, guides, likelihoods, objectives, networks and
data sets, with their options, and the packaged configs."""

import argparse
import json

from pyro_vae import config as cfg
from pyro_vae.registry import (
    DATASETS,
    FAMILIES,
    GUIDES,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    PRIORS,
    load_library_parts,
)


def list_parts(args: argparse.Namespace) -> None:
    load_library_parts()
    parts = {
        "families": FAMILIES,
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
