"""The standard figures of a trained VAE, assembled from :mod:`pyro_vae.plots`.

``write_figures`` is what ``pyro-vae train`` writes into a run directory and what
``Model.figures`` writes from Python: the ELBO curves, reconstructions, samples from p(z), the
posterior means coloured by label (projected on two principal axes beyond two dimensions),
traversals of the dimensions with the most KL, interpolations between test inputs, and KL per
dimension where it has a closed form. For a family with several latent layers, the scatter,
the traversals and the interpolations are of the top layer z_L (decoded through the means of
the layers below, ``decode``), and the KL per dimension is the top layer's.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from pyro_vae.estimate.diagnostics import kl_per_dimension, posterior_means
from pyro_vae.estimate.layer_diagnostics import layer_diagnostics, site_means
from pyro_vae.models.vae import VAE
from pyro_vae.viz import plots
from pyro_vae.viz.class_figures import class_size, write_class_figures
from pyro_vae.viz.common_figures import curves_and_reconstructions
from pyro_vae.viz.completion_figures import write_completion_figures

SCATTER_ROWS = 2000  # test inputs whose posterior means the scatter shows
TRAVERSED_DIMS = 8  # the dimensions with the most KL get a traversal row


def decoder_of(vae: VAE):
    """z -> E[x | z], without gradients."""

    @torch.no_grad()
    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.likelihood.mean(vae.decoder(z))

    return decode


@torch.no_grad()
def write_figures(
    vae: VAE,
    x: torch.Tensor,
    shape: Sequence[int],
    out_dir: Path,
    labels: Optional[torch.Tensor] = None,
    metrics: Optional[List[Dict]] = None,
    label_names: Optional[Sequence[str]] = None,
) -> List[Path]:
    """Write the standard figures for held-out rows ``x`` (flattened, on the VAE's device)
    into ``out_dir`` (``label_names[k]`` names label k in the latent scatter); returns the
    paths written."""
    out_dir = Path(out_dir)
    was_training = vae.training
    vae.eval()
    special = None
    if class_size(vae) is not None:  # a class latent y (a declared discrete site)
        special = write_class_figures
    elif getattr(vae, "condition", None) is not None:  # a CVAE: x given a condition c
        special = write_completion_figures
    if special is not None:
        written = special(vae, x, shape, out_dir, metrics)
        vae.train(was_training)
        return written
    decode = decoder_of(vae)
    written = curves_and_reconstructions(vae, x, shape, out_dir, metrics)
    written.append(
        plots.image_grid(
            [("samples from p(z)", vae.sample(10)), ("", vae.sample(10))],
            shape,
            out_dir / "samples.png",
        )
    )
    scatter_x = x[:SCATTER_ROWS]
    if len(vae.latent_sites) == 1:
        means = posterior_means(vae, scatter_x)
        kl = kl_per_dimension(vae, scatter_x)
    else:  # several layers: the top one's means and KL per dimension; decode from it
        top = vae.latent_sites[-1].name
        means = site_means(vae, scatter_x, top)
        kl = layer_diagnostics(vae, scatter_x)[top]["kl_per_dim"]
        kl = None if kl is None else torch.tensor(kl)
        decode = vae.decode
    scatter_labels = None if labels is None else labels[:SCATTER_ROWS]
    written.append(
        plots.latent_scatter(
            means, out_dir / "latent_scatter.png", scatter_labels, label_names
        )
    )
    if kl is not None:
        written.append(plots.kl_per_dimension(kl, out_dir / "kl_per_dim.png"))
        dims = torch.argsort(kl, descending=True)[:TRAVERSED_DIMS].tolist()
    else:
        dims = list(range(min(TRAVERSED_DIMS, means.shape[1])))
    written.append(
        plots.latent_traversal(
            decode, means[0], shape, out_dir / "latent_traversal.png", dims=dims
        )
    )
    pairs = [(means[2 * i], means[2 * i + 1]) for i in range(min(4, len(x) // 2))]
    ends = [(x[2 * i], x[2 * i + 1]) for i in range(len(pairs))]
    if pairs:
        written.append(
            plots.interpolation(
                decode, pairs, shape, out_dir / "interpolation.png", ends=ends
            )
        )
    vae.train(was_training)
    return written
