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
# # 3. The β trade-off: rate, distortion and posterior collapse
#
# The ELBO of one image splits into two terms,
#
# $$\mathcal L(x) = \underbrace{\mathbb E_{q(z\mid x)}[\log p(x\mid z)]}_{-\text{distortion } D}
#   \;-\; \underbrace{\mathrm{KL}(q(z\mid x)\,\|\,p(z))}_{\text{rate } R}.$$
#
# The *rate* is how many nats the code carries about the image; the *distortion* is how badly the
# decoder rebuilds the image from the code. The β-VAE (Higgins et al. 2017) trains on
# $-D - \beta R$: β > 1 makes information in the code expensive, β < 1 cheap. Sweeping β traces a
# rate-distortion curve (Alemi et al. 2018). Push β high enough and the code carries nothing: the
# posterior equals the prior for every image, **posterior collapse**. We then try two remedies, KL
# warm-up and free bits, and check that they keep more latent dimensions in use.
#
# Set `PYRO_VAE_SMOKE=1` to run in a few seconds (fewer β values and epochs).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_vae import config, data
from pyro_vae.estimate import diagnostics
from pyro_vae.models import vae
from pyro_vae.run import train
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
EPOCHS = 5 if SMOKE else 60
BETAS = [0.5, 2.0, 4.0] if SMOKE else [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
COLLAPSED_BETA = 2.0  # the run whose collapse the remedies should undo
FREE_NATS = 0.5  # free bits: nats per latent dimension that cost nothing

# %% [markdown]
# ## One helper: train a VAE from config overrides, then measure it
#
# Everything below changes only config values: `train.beta`, `train.kl_warmup_epochs`,
# `train.free_bits`. We use `TraceMeanField_ELBO` (closed-form KL, see tutorial 2), a 10-dimensional
# latent, and report on the 300 test digits:
#
# * rate $R$ and distortion $D$ (nats per image), from `diagnostics.elbo_terms`;
# * KL per latent dimension, $\mathbb E_x \mathrm{KL}(q(z_d\mid x)\,\|\,p(z_d))$, closed form;
# * **active units** (Burda et al. 2016): dimension $d$ is active when its posterior mean moves with
#   the input, $\mathrm{Var}_x\,\mathbb E_q[z_d\mid x] > 0.01$. A collapsed dimension ignores $x$.

# %%
digits = data.load(config.load().data)
x_test = digits.test


def run(label, **overrides):
    settings = {
        "train.epochs": EPOCHS,
        "train.device": "cpu",
        "objective.name": "meanfield",
        "train.eval_every": 1,  # the test KL after every epoch, for the curve below
        **overrides,
    }
    cfg = config.load(overrides=settings)
    pyro.set_rng_seed(0)
    net = vae.build(cfg, digits.data_dim)
    metrics = train.fit(net, digits, cfg)
    pyro.set_rng_seed(1)
    terms = diagnostics.elbo_terms(net, x_test, num_samples=10)
    result = {
        "label": label,
        "net": net,
        "metrics": metrics,
        **diagnostics.rate_distortion(terms),
        "kl_per_dim": diagnostics.kl_per_dimension(net, x_test),
        "active": diagnostics.active_units(net, x_test)["active_units"],
    }
    print(
        f"{label:28s} rate {result['rate']:6.2f}  distortion {result['distortion']:6.2f}  "
        f"active units {result['active']:2d}/10"
    )
    return result


sweep = [run(f"beta = {beta:g}", **{"train.beta": beta}) for beta in BETAS]

# %% [markdown]
# ## The rate-distortion curve
#
# Each β gives one point $(R, D)$. Lines of slope $-1$ are lines of constant ELBO ($D + R$ is the
# negative ELBO): the plain VAE (β = 1) looks for the point where such a line touches the curve,
# other βs pick the tangent point of slope $-\beta$. Small β buys sharp reconstructions with a
# costly code; large β squeezes the rate towards zero and the distortion up to that of a model that
# ignores $z$ altogether.
#
# The checks: as β rises the rate falls and the distortion rises (a tenth of a nat of slack for the
# Monte Carlo noise of the estimates).

# %%
rates = [r["rate"] for r in sweep]
distortions = [r["distortion"] for r in sweep]
points = list(zip(BETAS, rates, distortions))
for (b0, r0, d0), (b1, r1, d1) in zip(points, points[1:]):
    assert r1 < r0 + 0.1, f"rate rose from beta {b0} to {b1}: {r0:.2f} -> {r1:.2f}"
    assert (
        d1 > d0 - 0.1
    ), f"distortion fell from beta {b0} to {b1}: {d0:.2f} -> {d1:.2f}"
assert rates[-1] < rates[0] - 1 and distortions[-1] > distortions[0] + 1

# %% [markdown]
# ## Posterior collapse, dimension by dimension
#
# The rate is a sum over latent dimensions (for a diagonal guide and the standard-normal prior). As β
# grows, dimensions switch off one after another: their KL drops to zero, $q(z_d\mid x) = p(z_d)$ for
# every image, and the decoder learns to ignore them. The check: the number of active units never
# rises with β, and the largest β has fewer than the smallest.

# %%
active = [r["active"] for r in sweep]
print("active units by beta:", dict(zip(BETAS, active)))
assert all(
    a1 <= a0 for a0, a1 in zip(active, active[1:])
), f"active units rose with beta: {active}"
assert active[-1] < active[0]

# %% [markdown]
# What collapse looks like: reconstructions. At small β they follow each digit; at large β every
# test image is "reconstructed" as nearly the same blurry average digit, because the code says
# nothing about the input.

# %%
pyro.set_rng_seed(2)
shown = x_test[:12]
rows = [("test digits", shown)] + [
    (r["label"], r["net"].reconstruct(shown)) for r in sweep
]
fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.85 * len(rows)))
for ax, (label, images) in zip(axes, rows):
    strip = torch.ones(8, 12 * 9 - 1)  # twelve 8x8 images with a one-pixel white gap
    for i, image in enumerate(images):
        strip[:, 9 * i : 9 * i + 8] = image.reshape(8, 8)
    ax.imshow(strip.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
axes[0].set_title("reconstructions E[x | z], z ~ q(z | x), as β grows", fontsize=10)
saved = plots.save(fig, FIGURES / "03_reconstructions_by_beta.png")

# %% [markdown]
# ## Remedy 1: KL warm-up
#
# Early in training the decoder is poor, so the code cannot yet buy much reconstruction; the KL term,
# in contrast, pays off immediately by pushing $q(z\mid x)$ onto the prior. Many dimensions collapse
# before the decoder could have used them, and a collapsed dimension has no gradient signal to come
# back (Bowman et al. 2016; Sønderby et al. 2016). Warm-up multiplies the KL term by a weight that
# rises linearly from 0 to β over the first epochs (config `train.kl_warmup_epochs`), so the encoder
# and decoder first learn to use the code, then pay for it.

# %%
warmup = run(
    f"beta = {COLLAPSED_BETA:g}, KL warm-up",
    **{"train.beta": COLLAPSED_BETA, "train.kl_warmup_epochs": EPOCHS // 2},
)

# %% [markdown]
# ## Remedy 2: free bits
#
# Free bits (Kingma et al. 2016) changes the objective itself: the first λ nats of KL in each
# dimension are free,
#
# $$\mathcal L_\lambda = \mathbb E_q[\log p(x\mid z)] - \beta \sum_d \max\big(\lambda,\;
#   \overline{\mathrm{KL}}_d\big),$$
#
# where $\overline{\mathrm{KL}}_d$ is dimension $d$'s KL averaged over the mini-batch. Below λ a
# dimension gets no push towards the prior at all, so the reconstruction term is free to use it. The
# price: $\mathcal L_\lambda$ is not a bound on $\log p(x)$ any more, so we train with it and still
# *evaluate* with the true ELBO (which `fit` and `elbo_terms` do).
#
# In the library this is one config value, `train.free_bits` (λ in nats per latent dimension; CLI
# `--free-bits`). It works with the `trace` and `meanfield` objectives for a diagonal guide and a
# diagonal Gaussian prior, where the KL splits over dimensions (the config refuses other pairs);
# with `meanfield` the per-dimension KL is in closed form, as here.

# %%
freebits = run(
    f"beta = {COLLAPSED_BETA:g}, free bits {FREE_NATS:g}",
    **{"train.beta": COLLAPSED_BETA, "train.free_bits": FREE_NATS},
)

# %% [markdown]
# The check: at the same β, both remedies end with more active units than the plain run.

# %%
collapsed = sweep[BETAS.index(COLLAPSED_BETA)]
print(
    f"active units at beta {COLLAPSED_BETA:g}: plain {collapsed['active']}, warm-up {warmup['active']}, "
    f"free bits {freebits['active']}"
)
assert (
    freebits["active"] > collapsed["active"]
), "free bits should keep more latent dimensions in use"
assert (
    warmup["active"] > collapsed["active"]
), "KL warm-up should keep more latent dimensions in use"

# %% [markdown]
# ## The figures
#
# Left: the rate-distortion curve with the two remedies at β = 2; dashed lines are constant ELBO.
# Middle: the KL of each latent dimension (sorted) per run: a collapsed dimension has zero KL, free
# bits hold every dimension near λ. Right: the test KL during training (log scale). The plain run
# collapses within a few epochs, to a few hundredths of a nat, and only slowly and partly climbs back;
# with warm-up the code is in use before β's full price applies, and more of it survives.

# %%
runs = sweep + [warmup, freebits]
fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
a.plot(rates, distortions, "o-", color="C0", label="β sweep")
for r in sweep:
    a.annotate(
        f"β={r['label'].split('= ')[1]}",
        (r["rate"], r["distortion"]),
        textcoords="offset points",
        xytext=(5, 4),
        fontsize=8,
    )
a.plot(warmup["rate"], warmup["distortion"], "s", color="C1", label=warmup["label"])
a.plot(
    freebits["rate"], freebits["distortion"], "^", color="C2", label=freebits["label"]
)
all_rates, all_distortions = [r["rate"] for r in runs], [r["distortion"] for r in runs]
totals = [d + r for d, r in zip(all_distortions, all_rates)]
for level in torch.linspace(min(totals), max(totals) + 2, 5).tolist():
    a.plot([0, level], [level, 0], color="grey", linewidth=0.6, linestyle="--")
a.set(
    xlim=(-0.3, max(all_rates) * 1.1 + 0.3),
    ylim=(min(all_distortions) - 1, max(all_distortions) + 1),
    xlabel="rate R = KL(q(z|x) || p(z))  [nats]",
    ylabel="distortion D = -E_q log p(x|z)  [nats]",
    title="rate-distortion on test digits",
)
a.legend(fontsize=8)
width = 0.8 / len(runs)
for i, r in enumerate(runs):
    kl = torch.sort(r["kl_per_dim"], descending=True).values
    b.bar(
        (torch.arange(len(kl)) + i * width - 0.4 + width / 2).tolist(),
        kl.tolist(),
        width=width,
        label=f"{r['label']} ({r['active']} active)",
    )
b.axhline(FREE_NATS, color="grey", linewidth=0.6, linestyle=":")
b.set(
    xlabel="latent dimension (sorted by KL)",
    ylabel="KL per dimension [nats]",
    title="which dimensions carry information",
)
b.set_ylim(0, 1.45 * max(r["kl_per_dim"].max().item() for r in runs))
b.legend(fontsize=7, ncol=2, loc="upper right")
for r, style in [(collapsed, "-"), (warmup, "--"), (freebits, ":")]:
    c.plot(
        [m["epoch"] for m in r["metrics"]],
        [m["kl"] for m in r["metrics"]],
        style,
        label=r["label"],
    )
c.set(
    xlabel="epoch",
    ylabel="test KL (rate) [nats, log scale]",
    yscale="log",
    title=f"training at β = {COLLAPSED_BETA:g}",
)
c.legend(fontsize=8)
saved = plots.save(fig, FIGURES / "03_rate_distortion_and_collapse.png")
