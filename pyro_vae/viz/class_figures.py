"""The figures of a family with a class latent y (a site declared discrete): what a user does
with labels (Kingma et al. 2014, Figure 1).

* ``class_samples.png``: one row per style z ~ p(z), one column per class y: E[x | y, z], so the
  style is held fixed along a row and the class changes along it;
* ``analogies.png``: for test images, the style z = E_q[z | x, y_hat] (y_hat the classifier's
  class) decoded with every class;
* ``reconstructions.png`` and ``elbo.png`` as for every family.

The family provides ``decode(z, y)``, ``style(x, y)``, ``class_posterior(x)``, ``prior()``,
``reconstruct(x)`` and declares the class site's size in ``latent_sites``.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from pyro_vae.viz import plots
from pyro_vae.viz.common_figures import curves_and_reconstructions

ROWS = 8  # styles in the class-sample grid and images in the analogies


def class_size(family) -> Optional[int]:
    """The number of values of the family's discrete latent site, None without one."""
    sizes = [s.size for s in getattr(family, "latent_sites", ()) if s.discrete]
    return sizes[0] if sizes else None


@torch.no_grad()
def write_class_figures(
    family,
    x: torch.Tensor,
    shape: Sequence[int],
    out_dir: Path,
    metrics: Optional[List[Dict]] = None,
) -> List[Path]:
    """Write the figures above for held-out rows ``x`` into ``out_dir``."""
    out_dir, k = Path(out_dir), class_size(family)
    written = curves_and_reconstructions(family, x, shape, out_dir, metrics)
    classes = torch.arange(k, device=x.device)
    styles = family.prior().sample((ROWS,))
    rows = [
        (
            "one style z per row, classes 0.. along it" if i == 0 else "",
            family.decode(z.expand(k, -1), classes),
        )
        for i, z in enumerate(styles)
    ]
    written.append(plots.image_grid(rows, shape, out_dir / "class_samples.png"))
    images = x[:ROWS]
    guess = family.class_posterior(images).probs.argmax(-1)
    z = family.style(images, guess)
    rows = [
        (
            (
                f"input (classified {int(g)}), then its style z with each class"
                if i == 0
                else f"classified {int(g)}"
            ),
            torch.cat([image[None], family.decode(zi.expand(k, -1), classes)]),
        )
        for i, (image, g, zi) in enumerate(zip(images, guess, z))
    ]
    written.append(plots.image_grid(rows, shape, out_dir / "analogies.png"))
    return written
