"""The two figures every family writes, whatever else it draws: ``elbo.png`` (the training
curves, when there are metrics) and ``reconstructions.png`` (ten held-out rows above the
family's ``reconstruct`` of them)."""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from pyro_vae.viz import plots


def curves_and_reconstructions(
    family,
    x: torch.Tensor,
    shape: Sequence[int],
    out_dir: Path,
    metrics: Optional[List[Dict]] = None,
    label: str = "reconstruction",
) -> List[Path]:
    """Write ``elbo.png`` (with ``metrics``) and ``reconstructions.png`` (its second row
    titled ``label``) into ``out_dir``; returns the paths written."""
    written = []
    if metrics:
        written.append(plots.training_curves(metrics, out_dir / "elbo.png"))
    few = x[:10]
    written.append(
        plots.image_grid(
            [("data", few), (label, family.reconstruct(few))],
            shape,
            out_dir / "reconstructions.png",
        )
    )
    return written
