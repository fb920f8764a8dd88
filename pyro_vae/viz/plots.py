"""Matplotlib figures. The CLI, the Python API, tutorials and benchmarks call these; the math
modules never do.

Each function draws one figure, writes it to ``path`` and returns the path; opened in a
notebook (under IPython) the figure is also shown inline. Figures are built on
``matplotlib.figure.Figure`` directly, so the library never selects a backend (a notebook's
inline backend keeps working). Images are rows of flattened pixels; ``shape`` is one example's
shape, (C, H, W) with C = 1 (grey) or 3 (colour), (H, W), or (D,) for flat data.
"""

import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.viz.notebook import (  # noqa: F401  (save calls them)
    in_notebook,
    show_inline,
)

Decoder = Callable[[torch.Tensor], torch.Tensor]  # z (n, latent) -> E[x | z] (n, D)


def save(fig: Figure, path: Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (creating its folder; ``tight``: after ``tight_layout``);
    show it inline under IPython (a notebook), where the figure is also wanted on screen.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    if in_notebook():
        show_inline(fig, path, dpi)
    if hasattr(fig, "number"):  # a pyplot figure: release it from pyplot's registry
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def _figure(rows: int = 1, cols: int = 1, figsize=(5, 3.4), **kw):
    fig = Figure(figsize=figsize)
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def as_picture(row: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """One flattened example as an (H, W) grey or (H, W, 3) colour array for ``imshow``."""
    pixels = row.detach().float().cpu().clamp(0, 1)
    if len(shape) == 3:
        c, h, w = shape
        picture = pixels.reshape(c, h, w)
        return picture[0].numpy() if c == 1 else picture.permute(1, 2, 0).numpy()
    if len(shape) == 2:
        return pixels.reshape(shape).numpy()
    side = math.isqrt(shape[0])
    hw = (side, side) if side * side == shape[0] else (1, shape[0])
    return pixels.reshape(hw).numpy()


def image_grid(
    rows: Sequence[Tuple[str, torch.Tensor]], shape: Sequence[int], path: Path
) -> Path:
    """One row of images per (label, images) pair; images are flattened, values in [0, 1].
    Each row is one mosaic (images side by side, a light line between neighbours)."""
    cols = max(len(images) for _, images in rows)
    fig, axes = _figure(len(rows), 1, figsize=(cols * 0.8, len(rows) * 0.95))
    for (label, images), (ax,) in zip(rows, axes):
        ax.imshow(
            mosaic([as_picture(im, shape) for im in images], cols), vmin=0, vmax=1
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
        ax.set_title(label, fontsize=8, loc="left")
    return save(fig, path)


def mosaic(pictures: Sequence[np.ndarray], cols: int, gap: int = 1) -> np.ndarray:
    """``pictures`` (grey (H, W) or colour (H, W, 3)) side by side as one RGB array, ``cols``
    slots wide, separated by ``gap`` light-grey pixels; empty slots stay white."""
    h, w = pictures[0].shape[:2]
    out = np.ones((h + 2 * gap, cols * (w + gap) + gap, 3))
    for i, picture in enumerate(pictures):
        x0 = gap + i * (w + gap)
        out[:, x0 - gap : x0 + w + gap] = 0.75  # the frame around this slot
        rgb = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
        out[gap : gap + h, x0 : x0 + w] = rgb
    return out


def training_curves(metrics: List[Dict], path: Path) -> Path:
    """Three panels, each on its own scale so that none flattens another (an image's
    distortion is thousands of nats, its KL tens): the ELBO per epoch (the training objective
    every epoch; train, validation and test ELBO on the epochs that scored them, with a
    bits/dim axis where the rows carry bits), the distortion -E_q[log p(x|z)] and the rate
    KL(q || p) of the test ELBO."""
    scored = [m for m in metrics if "test_elbo" in m]
    epochs = [m["epoch"] for m in scored]
    fig, ((a, b, c),) = _figure(1, 3, figsize=(13.5, 3.6))
    a.plot(
        [m["epoch"] for m in metrics],
        [m["train_objective"] for m in metrics],
        color="0.7",
        linewidth=0.8,
        label="training objective",
    )
    for key in ("train", "valid", "test"):
        rows = [m for m in scored if f"{key}_elbo" in m]
        if rows:
            xs, ys = [m["epoch"] for m in rows], [m[f"{key}_elbo"] for m in rows]
            a.plot(xs, ys, marker=".", markersize=3, label=f"{key} ELBO")
    a.set(xlabel="epoch", ylabel="nats per data point", title="ELBO")
    a.legend(fontsize=7)
    bits = [m for m in scored if m.get("test_bits_per_dim") and m["test_elbo"]]
    if bits:  # bits/dim = nats * (bits/dim per nat), a constant -1 / (D ln 2)
        per_nat = bits[-1]["test_bits_per_dim"] / bits[-1]["test_elbo"]
        right = a.secondary_yaxis(
            "right", functions=(lambda n: n * per_nat, lambda b: b / per_nat)
        )
        right.set_ylabel("bits/dim")
    b.plot(epochs, [-m["reconstruction"] for m in scored], color="C3")
    b.set(xlabel="epoch", ylabel="nats per data point", title="distortion (test)")
    c.plot(epochs, [m["kl"] for m in scored], color="C4")
    c.set(xlabel="epoch", ylabel="nats per data point", title="rate KL(q || p) (test)")
    return save(fig, path)


def kl_per_dimension(kl: torch.Tensor, path: Path) -> Path:
    """Bars of KL(q(z_d|x) || p(z_d)) per latent dimension, largest first (collapsed
    dimensions sit near 0)."""
    kl = torch.as_tensor(kl, dtype=torch.float32).cpu()
    fig, ((ax,),) = _figure(figsize=(max(4, len(kl) * 0.15), 3))
    order = torch.argsort(kl, descending=True)
    ax.bar(range(len(kl)), kl[order].numpy())
    ax.set_xticks(range(len(kl)), [str(int(i)) for i in order], fontsize=6)
    ax.set(
        xlabel="latent dimension (sorted by KL)",
        ylabel="KL (nats)",
        title="KL(q(z_d|x) || p(z_d)) per dimension",
    )
    return save(fig, path)


def bound_ladder(
    ks: Sequence[int],
    bounds: Sequence[float],
    stderrs: Sequence[float],
    elbo: float,
    path: Path,
    ais: Optional[Tuple[float, float]] = None,
    bdmc: Optional[Tuple[float, float]] = None,
) -> Path:
    """ELBO <= IWAE_K as K grows, with the largest-K estimate of log p(x) marked; ``ais`` (mean,
    SE) adds the AIS estimate as a band, ``bdmc`` (forward, reverse) the BDMC bounds on data
    simulated from the model (other data: their width, not their level, is what compares).
    """
    extra = ais is not None or bdmc is not None  # legend beside the axes, not over them
    fig, ((ax,),) = _figure(figsize=(8, 3.4) if extra else (5, 3.4))
    ax.errorbar(
        ks,
        bounds,
        yerr=[2 * s for s in stderrs],
        marker="o",
        capsize=3,
        label="IWAE_K (±2 SE)",
    )
    ax.axhline(elbo, color="C1", linestyle="--", label="ELBO")
    if ais is not None:
        ax.axhline(ais[0], color="C2", label="AIS (±2 SE)")
        ax.axhspan(ais[0] - 2 * ais[1], ais[0] + 2 * ais[1], color="C2", alpha=0.2)
    if bdmc is not None:
        ax.errorbar(  # an interval: the reverse bound may fall below the forward one
            [max(ks) * 3],
            [(bdmc[0] + bdmc[1]) / 2],
            yerr=[[abs(bdmc[1] - bdmc[0]) / 2]],
            color="C3",
            capsize=5,
            fmt="none",
            label=f"BDMC sandwich, simulated data ({bdmc[1] - bdmc[0]:.2f} nats)",
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="K (importance samples)",
        ylabel="nats per data point",
        title="ELBO <= IWAE_K <= IS" + (" <= AIS" if ais is not None else ""),
    )
    ax.legend(**({"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if extra else {}))
    return save(fig, path)


def project_2d(z: torch.Tensor) -> Tuple[torch.Tensor, str]:
    """``z`` itself when it has two dimensions or fewer, else its projection on the first two
    principal components (the SVD of the centred codes), with axis labels."""
    z = z.detach().float().cpu()
    if z.shape[1] == 1:
        return torch.cat([z, torch.zeros_like(z)], 1), "z"
    if z.shape[1] == 2:
        return z, "z"
    centred = z - z.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    share = (s[:2].pow(2).sum() / s.pow(2).sum()).item()
    return centred @ v[:2].T, f"principal axes of z ({share:.0%} of the variance)"


def latent_scatter(
    z: torch.Tensor,
    path: Path,
    labels: Optional[torch.Tensor] = None,
    label_names: Optional[Sequence[str]] = None,
) -> Path:
    """Posterior means of many inputs in the plane, coloured by label when labels are given
    (a legend of ``label_names[k]`` when label k has a name, e.g. an image folder's
    sub-folder); latents with more than two dimensions are projected on their first two
    principal axes.
    """
    points, name = project_2d(z)
    fig, ((ax,),) = _figure(figsize=(5.2, 4.4))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8)
    elif label_names:
        colour = torch.as_tensor(labels).cpu()
        for k, name in enumerate(label_names):
            mine = points[colour == k]
            if len(mine):
                ax.scatter(mine[:, 0], mine[:, 1], s=6, alpha=0.8, label=name)
        ax.legend(fontsize=7, markerscale=2, title="label", title_fontsize=7)
    else:
        colour = torch.as_tensor(labels).cpu().numpy()
        drawn = ax.scatter(
            points[:, 0], points[:, 1], c=colour, s=6, cmap="tab10", alpha=0.8
        )
        fig.colorbar(drawn, ax=ax, label="label")
    ax.set(xlabel="axis 1", ylabel="axis 2")
    ax.set_title(f"posterior means E[z | x]: {name}", fontsize=9)
    return save(fig, path)


def latent_traversal(
    decode: Decoder,
    z: torch.Tensor,
    shape: Sequence[int],
    path: Path,
    dims: Optional[Sequence[int]] = None,
    span: float = 3.0,
    steps: int = 9,
) -> Path:
    """One row per latent dimension d: decode z + t e_d for t evenly spaced in [-span, span],
    the other coordinates held at ``z`` (a code, e.g. one input's posterior mean)."""
    z = z.detach().reshape(1, -1)
    dims = list(range(z.shape[1])) if dims is None else list(dims)
    offsets = torch.linspace(-span, span, steps, device=z.device)
    rows = []
    for d in dims:
        codes = z.repeat(steps, 1)
        codes[:, d] += offsets
        rows.append((f"z_{d}: {-span:+g} ... {span:+g}", decode(codes)))
    return image_grid(rows, shape, path)


def interpolation(
    decode: Decoder,
    pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    shape: Sequence[int],
    path: Path,
    steps: int = 10,
    ends: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None,
) -> Path:
    """One row per pair of codes (z_a, z_b): decode (1 - t) z_a + t z_b for t from 0 to 1;
    with ``ends`` (the two inputs of each pair), the inputs frame the row."""
    t = torch.linspace(0, 1, steps)
    rows = []
    for i, (za, zb) in enumerate(pairs):
        w = t.to(za.device).unsqueeze(1)
        images = decode((1 - w) * za.reshape(1, -1) + w * zb.reshape(1, -1))
        if ends is not None:
            xa, xb = ends[i]
            images = torch.cat(
                [xa.reshape(1, -1).to(images), images, xb.reshape(1, -1).to(images)]
            )
        rows.append(("input a, decoded path, input b" if i == 0 else "", images))
    return image_grid(rows, shape, path)
