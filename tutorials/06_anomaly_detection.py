# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Anomaly detection with log p(x)
#
# A trained VAE is a density model: it gives every image a number, $\log p(x)$, estimated by
# importance sampling (tutorial 5). An input unlike the training data should get a low number. A
# popular shortcut scores inputs by **reconstruction error** instead: encode, decode, and measure
# $\lVert x - \hat x\rVert^2$. This tutorial compares the two on digits against several kinds of
# out-of-distribution (OOD) input, measures each by its AUROC, and shows, with a check, where the
# shortcut misleads: it counts wrong pixels, while $\log p(x)$ weighs each wrong pixel by how
# impossible the model thought it was.
#
# Set `PYRO_VAE_SMOKE=1` to run in a few seconds (a few epochs, few importance samples).

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_vae import config, data
from pyro_vae.estimate import marginal
from pyro_vae.models import vae
from pyro_vae.run import train
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
EPOCHS = 5 if SMOKE else 60
NUM_SAMPLES = 20 if SMOKE else 500

# %% [markdown]
# ## A VAE trained on digits
#
# The library's default VAE (10-dimensional latent, Bernoulli pixels), trained on the 1497 training
# digits. The 300 test digits are the in-distribution inputs.

# %%
cfg = config.load(overrides={"train.epochs": EPOCHS, "train.device": "cpu"})
digits = data.load(cfg.data)
pyro.set_rng_seed(0)
net = vae.build(cfg, digits.data_dim)
metrics = train.fit(net, digits, cfg)
x_test = digits.test
n = len(x_test)
print(f"test ELBO after {EPOCHS} epochs: {metrics[-1]['test_elbo']:.2f} nats")

# %% [markdown]
# ## Out-of-distribution inputs
#
# Five sets of 300 binary 8x8 images each:
#
# * **noise**: independent pixels, on with the digits' average ink density (same number of lit pixels
#   on average, no strokes);
# * **inverted**: test digits with black and white swapped;
# * **erased block**: test digits with a random 4x4 block set to black, often cutting a stroke;
# * **blank**: the all-black image (300 copies);
# * **stray pixels**: test digits with two extra pixels lit in the margins, picked among the pixels
#   that are on in less than 1% of training digits. A human barely notices; it is still not something
#   the data ever shows.

# %%
g = torch.Generator().manual_seed(0)
ink = x_test.mean().item()
images = x_test.reshape(n, 8, 8)
erased = images.clone()
for i, (r, c) in enumerate(torch.randint(0, 5, (n, 2), generator=g).tolist()):
    erased[i, r : r + 4, c : c + 4] = 0
margins = (digits.train.mean(0) < 0.01).nonzero().flatten()
stray = x_test.clone()
for i in range(n):
    stray[i, margins[torch.randperm(len(margins), generator=g)[:2]]] = 1
inputs = {
    "test digits": x_test,
    "noise": torch.bernoulli(torch.full((n, 64), ink), generator=g),
    "inverted": 1 - x_test,
    "erased block": erased.reshape(n, 64),
    "blank": torch.zeros(n, 64),
    "stray pixels": stray,
}
print(f"{len(margins)} margin pixels; ink density {ink:.2f}")

# %% [markdown]
# ## Two scores
#
# * $\log p(x)$: importance sampling with $K$ draws from the guide,
#   $\log \frac1K\sum_k p(x, z_k)/q(z_k\mid x)$ (`pyro_vae.estimate.marginal`). Anomalous means *low*.
# * reconstruction error: $\lVert x - \mathbb E[x\mid z = \mu(x)]\rVert^2$, the squared distance
#   between the image and the decoder's mean image at the encoder's mean code. Anomalous means *high*.
#
# Both are oriented below so that larger means "more anomalous".


# %%
def scores(x):
    pyro.set_rng_seed(1)
    log_p = marginal.log_marginal_likelihood(
        net.model, net.guide, x, num_samples=NUM_SAMPLES
    ).log_marginal
    with torch.no_grad():
        reconstruction = net.likelihood.mean(net.decoder(net.encoder(x).base_dist.loc))
    return {
        "-log p(x)": -log_p.float(),
        "reconstruction error": ((x - reconstruction) ** 2).sum(-1),
    }


results = {name: scores(x) for name, x in inputs.items()}
for name, s in results.items():
    print(
        f"{name:14s} log p(x) {-s['-log p(x)'].mean():8.2f}   reconstruction error "
        f"{s['reconstruction error'].mean():6.2f}"
    )

# %% [markdown]
# ## AUROC and its standard error
#
# The area under the ROC curve has a plain meaning: the probability that a randomly picked OOD input
# scores as more anomalous than a randomly picked test digit (ties count one half). 0.5 is chance, 1
# is perfect separation. We compute it from all 300 x 300 pairs, and its standard error from Hanley &
# McNeil (1982):
#
# $$\mathrm{SE}^2 = \frac{A(1-A) + (n_1 - 1)(Q_1 - A^2) + (n_2 - 1)(Q_2 - A^2)}{n_1 n_2},\quad
#   Q_1 = \frac{A}{2 - A},\; Q_2 = \frac{2A^2}{1 + A}.$$


# %%
def auroc(normal, anomalous):
    """P(anomalous score > normal score) + P(tie) / 2, and its Hanley-McNeil standard error."""
    diff = anomalous[:, None] - normal[None, :]
    a = ((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()).item()
    n1, n2 = len(anomalous), len(normal)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(
        max(a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a), 0.0)
        / (n1 * n2)
    )
    return a, se


table = {}
for name in list(inputs)[1:]:
    normal = results["test digits"]
    table[name] = {
        score: auroc(normal[score], values) for score, values in results[name].items()
    }
    (a1, s1), (a2, s2) = table[name].values()
    print(
        f"{name:14s} AUROC by log p(x) {a1:.3f} ± {s1:.3f}   by reconstruction error {a2:.3f} ± {s2:.3f}"
    )

# %% [markdown]
# ## Check 1: log p(x) flags the gross anomalies
#
# Noise and inverted digits are far from anything the model has seen: $\log p(x)$ should separate
# them almost perfectly (AUROC above 0.95), and it should beat chance on every OOD set by more than
# three standard errors.

# %%
for name in ("noise", "inverted"):
    assert table[name]["-log p(x)"][0] > 0.95, f"log p(x) should flag {name}"
for name, row in table.items():
    a, se = row["-log p(x)"]
    assert (
        a > 0.5 + 3 * se
    ), f"log p(x) is no better than chance on {name}: {a:.3f} ± {se:.3f}"

# %% [markdown]
# ## Check 2: where reconstruction error misleads
#
# On the gross anomalies both scores do well: the decoder can only draw digit-like images, so noise,
# inverted digits and even the blank image reconstruct badly. The stray pixels separate the two
# scores. Reconstruction error charges each wrong pixel the same, at most 1: a lit margin pixel costs
# what a slightly thicker stroke costs. $\log p(x)$ charges each pixel its surprise,
# $-\log p(x_i\mid z)$: the decoder is nearly certain a margin pixel is off (probability of *on*
# below a percent), so lighting it costs several nats, more than most legitimate variation in a digit.
# The check: $\log p(x)$'s AUROC on stray pixels exceeds reconstruction error's by more than three
# standard errors of the difference (the two AUROCs' SEs added in quadrature; they share the data and
# are positively correlated, so this overstates the difference's SE and is conservative).

# %%
(a_lp, se_lp), (a_rec, se_rec) = table["stray pixels"].values()
margin = 3 * math.sqrt(se_lp**2 + se_rec**2)
print(
    f"stray pixels: AUROC {a_lp:.3f} (log p) vs {a_rec:.3f} (reconstruction), difference "
    f"{a_lp - a_rec:.3f} > 3 SE = {margin:.3f}"
)
assert (
    a_lp - a_rec > margin
), "log p(x) should beat reconstruction error on stray pixels"

# %% [markdown]
# ## The figures
#
# First: the score distributions (in-distribution in black) and the ROC curves for the stray pixels.
# Second: why. For a few stray-pixel digits: the image, its reconstruction, the squared error per
# pixel, and the surprise per pixel $-\log p(x_i\mid z)$ at the encoder's mean code. The squared
# error spreads over the digit's edges as much as over the stray pixels; the surprise lights up the
# stray pixels.


# %%
def roc_curve(normal, anomalous):
    everything = torch.sort(torch.cat([normal, anomalous]), descending=True).values
    thresholds = torch.cat([torch.tensor([float("inf")]), everything])
    return (
        [(normal >= t).double().mean().item() for t in thresholds],
        [(anomalous >= t).double().mean().item() for t in thresholds],
    )


fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
for ax, score in zip(axes[:2], ["-log p(x)", "reconstruction error"]):
    values = torch.cat([s[score] for s in results.values()])
    bins = torch.linspace(values.min(), values.quantile(0.99), 40).tolist()
    for i, (name, s) in enumerate(results.items()):
        style = {"color": "black", "linewidth": 2} if i == 0 else {"color": f"C{i - 1}"}
        ax.hist(
            s[score].clamp(max=bins[-1]).tolist(),
            bins=bins,
            histtype="step",
            density=True,
            label=name,
            **style,
        )
    ax.set(
        xlabel=f"{score} (higher: more anomalous)",
        ylabel="density",
        title=f"scored by {score}",
    )
    ax.legend(fontsize=8)
ax = axes[2]
for score, color in [("-log p(x)", "C0"), ("reconstruction error", "C3")]:
    fpr, tpr = roc_curve(results["test digits"][score], results["stray pixels"][score])
    ax.plot(
        fpr,
        tpr,
        color=color,
        label=f"{score}: AUROC {table['stray pixels'][score][0]:.3f}",
    )
ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
ax.set(
    xlabel="false-positive rate (test digits flagged)",
    ylabel="true-positive rate (stray flagged)",
    title="ROC: test digits vs stray pixels",
    aspect="equal",
)
ax.legend(fontsize=8, loc="lower right")
plots.save(fig, FIGURES / "06_scores_and_roc.png")

shown = stray[:6]
with torch.no_grad():
    out = net.decoder(net.encoder(shown).base_dist.loc)
    recon = net.likelihood.mean(out)
    surprise = -torch.distributions.Bernoulli(logits=out).log_prob(shown)
fig, axes = plt.subplots(4, len(shown), figsize=(len(shown) * 1.6, 7))
rows = [
    ("stray-pixel digit", shown, "gray", 1),
    ("reconstruction", recon, "gray", 1),
    ("squared error", (shown - recon) ** 2, "magma", 1),
    ("surprise -log p(x_i|z)", surprise, "magma", 6),
]
for r, (label, values, cmap, top) in enumerate(rows):
    for c in range(len(shown)):
        ax = axes[r][c]
        ax.imshow(values[c].reshape(8, 8).numpy(), cmap=cmap, vmin=0, vmax=top)
        ax.set(xticks=[], yticks=[])
    axes[r][0].set_ylabel(label, fontsize=8)
fig.suptitle(
    "squared error (scale 0-1) vs surprise in nats (scale 0-6), per pixel", fontsize=10
)
plots.save(fig, FIGURES / "06_why_log_p.png")

saved = plots.image_grid(
    [(name, x[:10]) for name, x in inputs.items()],
    digits.image_shape,
    FIGURES / "06_inputs.png",
)
