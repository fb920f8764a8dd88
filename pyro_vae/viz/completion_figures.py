"""The figures of a family that completes images from a given part (the conditional VAE):
``completions.png`` (each test image, its given part, and completions drawn from p(z | c)),
``reconstructions.png`` and ``elbo.png``. The family provides ``given_mask`` (the given
pixels), ``complete(x, num)`` and ``reconstruct(x)``."""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from pyro_vae.viz import plots
from pyro_vae.viz.common_figures import curves_and_reconstructions

IMAGES = 8
COMPLETIONS = 6


@torch.no_grad()
def write_completion_figures(
    family,
    x: torch.Tensor,
    shape: Sequence[int],
    out_dir: Path,
    metrics: Optional[List[Dict]] = None,
) -> List[Path]:
    """Write the figures above for held-out rows ``x`` into ``out_dir``."""
    out_dir = Path(out_dir)
    written = curves_and_reconstructions(
        family, x, shape, out_dir, metrics, "target pixels from q(z|x)"
    )
    images = x[:IMAGES]
    given = images * family.given_mask.to(images)
    drawn = family.complete(images, COMPLETIONS)  # (num, N, D)
    rows = [
        (
            "image, given part, completions from p(z | given)" if i == 0 else "",
            torch.cat([images[i : i + 1], given[i : i + 1], drawn[:, i]]),
        )
        for i in range(len(images))
    ]
    written.append(plots.image_grid(rows, shape, out_dir / "completions.png"))
    return written
