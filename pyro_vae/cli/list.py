"""``pyro-vae list``: the registered priors, guides, likelihoods, objectives, networks and
data sets, with their options, and the packaged configs."""

import argparse
import json
import shutil
import textwrap

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
            options = ", ".join(
                f"{k}={v!r}" for k, v in registry.defaults(name).items()
            )
            text = description(registry.get(name).__doc__)
            text += f" [options: {options}]" if options else ""
            print(entry(name, text))
    print(
        "packaged configs (use with --config NAME):", ", ".join(cfg.packaged_configs())
    )


NAME_WIDTH = 24  # the column where descriptions start


def description(doc) -> str:
    """A part's description: the first paragraph of its docstring, whole, on one line."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def entry(name: str, text: str) -> str:
    """``name`` and ``text`` wrapped to the terminal's width (80 columns when it is not a
    terminal), the text in a column of its own: nothing is cut."""
    width = max(shutil.get_terminal_size((80, 24)).columns, NAME_WIDTH + 30)
    return textwrap.fill(
        text,
        width=width,
        initial_indent=f"  {name:{NAME_WIDTH - 3}s} ",
        subsequent_indent=" " * NAME_WIDTH,
        break_on_hyphens=False,
        break_long_words=False,
    )
