"""Matplotlib figures. Only the CLI, tutorials and benchmarks call these; the math never does."""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def training_curves(metrics: List[Dict], path: Path) -> Path:
    """Train/test ELBO per epoch, and the test ELBO's two terms."""
    epochs = [m["epoch"] for m in metrics]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [m["train_elbo"] for m in metrics], label="train ELBO")
    a.plot(epochs, [m["test_elbo"] for m in metrics], label="test ELBO")
    a.set(xlabel="epoch", ylabel="nats per data point", title="ELBO")
    a.legend()
    b.plot(
        epochs,
        [-m["reconstruction"] for m in metrics],
        label="-reconstruction (distortion)",
    )
    b.plot(epochs, [m["kl"] for m in metrics], label="KL(q || p) (rate)")
    b.set(
        xlabel="epoch",
        ylabel="nats per data point",
        title="test ELBO = reconstruction - KL",
    )
    b.legend()
    return save(fig, path)


def image_grid(
    rows: Sequence[Tuple[str, torch.Tensor]], image_shape: Tuple[int, int], path: Path
) -> Path:
    """One row of images per (label, images) pair; images are flattened, values in [0, 1]."""
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(cols * 0.8, len(rows) * 0.95), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():  # a light frame keeps neighbours apart
                spine.set_edgecolor("0.75")
            if c >= len(images):
                ax.axis("off")
            else:
                ax.imshow(
                    images[c].detach().cpu().reshape(image_shape).numpy(),
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                )
        axes[r][0].set_title(label, fontsize=8, loc="left")
    return save(fig, path)


def kl_per_dimension(kl: torch.Tensor, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, len(kl) * 0.15), 3))
    order = torch.argsort(kl, descending=True)
    ax.bar(range(len(kl)), kl[order].cpu().numpy())
    ax.set(
        xlabel="latent dimension (sorted)",
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
    fig, ax = plt.subplots(figsize=(8, 3.4) if extra else (5, 3.4))
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
