"""The figures of the conditional VAE, ``elbo.png`` and ``reconstructions.png`` beside:

* given quadrants: ``completions.png`` (each test image, its given part, and completions
  drawn from p(z | c));
* given the label: ``class_samples.png``, one row per standard-normal draw eps and one column
  per class y: E[x | z, y] for z = mu(y) + sigma(y) eps, the same eps along a row.

The family provides ``given_mask`` (the given pixels; None for a label), ``complete(x, num)``,
``reconstruct(x)``, and for a label ``classes``, ``data_dim`` and ``decode_noise(eps, y)``.
"""

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
    if family.given_mask is None:
        return _label_figures(family, x, shape, out_dir, metrics)
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


def _label_figures(family, x, shape, out_dir: Path, metrics) -> List[Path]:
    written = []
    if metrics:
        written.append(plots.training_curves(metrics, out_dir / "elbo.png"))
    few = x[:10]
    rows = [
        ("data", few[:, : family.data_dim]),
        ("from q(z|x,y)", family.reconstruct(few)),
    ]
    written.append(plots.image_grid(rows, shape, out_dir / "reconstructions.png"))
    k = family.classes
    classes = torch.arange(k, device=x.device)
    eps = torch.randn(IMAGES, family.latent_sites[0].size, device=x.device)
    rows = [
        (
            "one noise draw per row, classes 0.. along it" if i == 0 else "",
            family.decode_noise(e.expand(k, -1), classes),
        )
        for i, e in enumerate(eps)
    ]
    written.append(plots.image_grid(rows, shape, out_dir / "class_samples.png"))
    return written
