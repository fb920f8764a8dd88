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
# # 5. The marginal likelihood by importance sampling
#
# The ELBO is a bound; the number we want is $\log p(x) = \log \int p(x, z)\,dz$. Importance sampling
# with the guide as proposal estimates it without bias *inside* the log:
#
# $$p(x) = \mathbb E_{q(z\mid x)}\Big[\frac{p(x, z)}{q(z\mid x)}\Big] \approx \frac1K\sum_{k=1}^K w_k,
#   \qquad w_k = \frac{p(x, z_k)}{q(z_k\mid x)},\; z_k \sim q(z\mid x).$$
#
# Its log, $\mathrm{IWAE}_K = \log \frac1K \sum_k w_k$, is biased low (Jensen), and in expectation
# climbs a ladder (Burda et al. 2016):
#
# $$\mathrm{ELBO} = \mathbb E[\mathrm{IWAE}_1] \le \mathbb E[\mathrm{IWAE}_K] \le
#   \mathbb E[\mathrm{IWAE}_{2K}] \le \log p(x),$$
#
# reaching $\log p(x)$ as $K \to \infty$. How fast depends on how well $q$ matches the posterior,
# which the **effective sample size** $\mathrm{ESS} = (\sum_k w_k)^2 / \sum_k w_k^2$ measures: $K$ for a
# perfect proposal, near 1 when one weight dominates. `pyro_vae.estimate.marginal` reports the estimate, its
# standard error (delta method) and the ESS for every data point.
#
# We first check all of it on the linear-Gaussian model, where $\log p(x)$ is known exactly, then use
# it on a VAE trained on digits. Set `PYRO_VAE_SMOKE=1` to run in a few seconds.

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch

from pyro_vae import config, data
from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.estimate import marginal
from pyro_vae.infer import traces
from pyro_vae.models import vae
from pyro_vae.run import train
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
NUM_POINTS = 50 if SMOKE else 200  # linear-Gaussian data points
BUDGET = 400 if SMOKE else 20_000  # importance samples per data point (linear-Gaussian)
DIGIT_BUDGET = 200 if SMOKE else 10_000  # ... and per test digit
EPOCHS = 5 if SMOKE else 60
pyro.set_rng_seed(0)

# %% [markdown]
# ## Part 1: the linear-Gaussian model, where the truth is known
#
# A 2-dimensional latent and 6-dimensional observations, $x = Wz + b + \sigma\varepsilon$ with
# $\sigma = 1$, the model written as a Pyro program. The two columns of $W$ point in similar directions,
# so the data cannot tell $z_1$ from $z_2$ well and the posterior is strongly *correlated*:
# $\Sigma = (I + W^\top W/\sigma^2)^{-1}$ is far from diagonal.

# %%
g = torch.Generator().manual_seed(0)
weight = torch.randn(6, 2, generator=g, dtype=torch.float64)
weight[:, 1] = 0.8 * weight[:, 0] + 0.6 * weight[:, 1]
truth = LinearGaussian(weight, torch.randn(6, generator=g, dtype=torch.float64), 1.0)
x = truth.sample(NUM_POINTS, generator=g)
exact = truth.log_marginal(x)
post_mean, post_cov = truth.posterior(x)
correlation = (post_cov[0, 1] / post_cov.diagonal().prod().sqrt()).item()
print(
    f"{NUM_POINTS} points; mean exact log p(x) = {exact.mean():.4f}; "
    f"posterior correlation {correlation:.2f}"
)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample(
            "z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(1)
        )
        pyro.sample(
            "x",
            dist.Normal(z @ truth.weight.T + truth.bias, truth.noise_scale).to_event(1),
            obs=x,
        )


# %% [markdown]
# Three proposals, each a Pyro guide:
#
# * **exact**: the posterior itself (full covariance);
# * **mean field**: the best *diagonal* Gaussian, the one the ELBO picks within that family: the
#   posterior mean, and variances $1/\Lambda_{jj}$ from the diagonal of the posterior precision
#   $\Lambda = \Sigma^{-1}$. With a strongly correlated posterior these are much *narrower* than the
#   posterior's marginals: the ELBO's $\mathrm{KL}(q\,\|\,p)$ punishes mass where $p$ has none, not
#   the reverse;
# * **wide**: a diagonal Gaussian off-centre by half a posterior standard deviation in each
#   coordinate, and 1.5 times as wide as the posterior's marginals.


# %%
precision_diag = torch.linalg.inv(post_cov).diagonal()
marginal_sd = post_cov.diagonal().sqrt()


def make_guide(kind):
    def guide(x):
        mean, cov = truth.posterior(x)
        if kind == "exact":
            q = dist.MultivariateNormal(mean, covariance_matrix=cov)
        elif kind == "mean field":
            q = dist.Normal(mean, precision_diag.rsqrt()).to_event(1)
        else:
            q = dist.Normal(mean + 0.5 * marginal_sd, 1.5 * marginal_sd).to_event(1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    return guide


guides = {kind: make_guide(kind) for kind in ("exact", "mean field", "wide")}

# %% [markdown]
# ## Check 1: the perfect proposal is exact with one sample
#
# With $q = p(z\mid x)$ every weight equals $p(x, z)/p(z\mid x) = p(x)$: the estimate is exact whatever
# $K$, its standard error is zero and ESS $= K$.

# %%
perfect = marginal.log_marginal_likelihood(model, guides["exact"], x, num_samples=100)
print(
    f"exact guide: max |estimate - log p(x)| = {(perfect.log_marginal - exact).abs().max():.2e}, "
    f"ESS = {perfect.ess.min():.2f} .. {perfect.ess.max():.2f} of K = 100"
)
assert torch.allclose(perfect.log_marginal, exact, atol=1e-8)
assert torch.allclose(perfect.ess, torch.full_like(perfect.ess, 100.0))

# %% [markdown]
# ## The bound ladder, with standard errors
#
# For each $K$ we split a budget of draws per data point into $M$ = budget / $K$ independent
# replicates of $\mathrm{IWAE}_K$, average them over replicates and data points, and take the standard
# error from the spread of the replicates. $K = 1$ is the ELBO.


# %%
@torch.no_grad()
def ladder(model, guide, x, budget, ks, chunk=50_000):
    """K -> (mean over data and replicates of IWAE_K, its Monte Carlo standard error)."""
    per_call = max(1, chunk // len(x))
    log_w = torch.cat(
        [
            traces.log_weights(model, guide, min(per_call, budget - start), x)
            for start in range(0, budget, per_call)
        ]
    ).double()
    out = {}
    for k in ks:
        reps = torch.logsumexp(
            log_w[: budget // k * k].reshape(budget // k, k, -1), 1
        ) - math.log(k)
        se = reps.var(0).sum().sqrt() / (len(x) * math.sqrt(reps.shape[0]))
        out[k] = (reps.mean().item(), se.item())
    return out


KS = [1, 4, 16, 64] if SMOKE else [1, 10, 100, 1000, 5000]
ladders = {
    kind: ladder(model, guides[kind], x, BUDGET, [k for k in KS if BUDGET // k >= 2])
    for kind in ("mean field", "wide")
}
for kind, rungs in ladders.items():
    print(
        f"{kind:10s} "
        + "  ".join(f"IWAE_{k} {v:.4f}±{se:.4f}" for k, (v, se) in rungs.items())
    )
print(f"{'exact':10s} log p(x) {exact.mean():.4f}")

# %% [markdown]
# ## Check 2: ELBO ≤ IWAE_K ≤ log p(x), rising in K
#
# Each rung must be at least the one before (up to three standard errors of the difference) and at
# most the truth (up to three standard errors). The ELBO of the mean-field guide must sit strictly
# below $\log p(x)$: mean field cannot represent the correlated posterior. (These standard errors come
# from independent replicates; check 3 says when to trust them.)

# %%
truth_mean = exact.mean().item()
for kind, rungs in ladders.items():
    values = list(rungs.values())
    for (v0, s0), (v1, s1) in zip(values, values[1:]):
        assert v1 > v0 - 3 * math.hypot(s0, s1), f"{kind}: IWAE fell as K grew"
    for v, s in values:
        assert v < truth_mean + 3 * s, f"{kind}: IWAE above log p(x)"
elbo_mf, elbo_se = ladders["mean field"][1]
assert (
    elbo_mf < truth_mean - 3 * elbo_se
), "mean field's ELBO should be strictly below log p(x)"

# %% [markdown]
# ## Check 3: when is the standard error to be trusted?
#
# The standard error of an importance-sampling estimate comes from the central limit theorem, which
# needs the weights to have finite variance: $\mathbb E_q[w^2] = \int p(x, z)^2 / q(z\mid x)\, dz <
# \infty$. For a Gaussian posterior with precision $\Lambda$ and a Gaussian proposal with precision
# $\Lambda_q$, the integrand is a Gaussian kernel with precision $2\Lambda - \Lambda_q$: the variance is
# finite exactly when that matrix is positive definite. A proposal much narrower than the posterior
# in some direction breaks it.
#
# Here: the wide proposal passes; the mean-field one fails. Mean field's ELBO-optimal variances are
# fine for a bound, yet they make an importance sampler with *infinite* variance, whose standard
# error (and ESS) can look healthy while the estimate is far off. (The ladder above shows the
# symptom: mean field's rungs are still creeping up at the largest K.) Note the reversal: mean field
# has by far the better ELBO ($K = 1$), the wide proposal the better importance sampler. A good
# variational approximation and a good proposal are different things: the first may miss mass of
# the posterior, the second may not.

# %%
precision = torch.linalg.inv(post_cov)
proposal_precisions = {
    "mean field": torch.diag(precision_diag),
    "wide": torch.diag(1 / (1.5 * marginal_sd) ** 2),
}
for kind, q_precision in proposal_precisions.items():
    smallest = torch.linalg.eigvalsh(2 * precision - q_precision).min().item()
    print(
        f"{kind:10s} smallest eigenvalue of 2 Lambda - Lambda_q: {smallest:+.3f} "
        f"({'finite' if smallest > 0 else 'INFINITE'} weight variance)"
    )
    assert (smallest > 0) == (kind == "wide")

# %% [markdown]
# ## Check 4: the estimate against the truth, within 4 standard errors
#
# `marginal.log_marginal_likelihood` with the largest $K$ gives per-point estimates and delta-method
# standard errors $\mathrm{SE} = \sqrt{(K/\mathrm{ESS} - 1)/(K - 1)}$ (a relative error of $p(x)$, hence
# an absolute one of $\log p(x)$). With the finite-variance (wide) proposal the average over data
# points must be within 4 standard errors of the exact mean $\log p(x)$, and point by point nearly all
# must be within 4 of their own SEs (the delta method is an approximation: we ask 95%). The mean-field
# numbers are printed next to them for comparison, with no promise attached.

# %%
K = KS[-1]
estimates = {}
for kind in ("mean field", "wide"):
    pyro.set_rng_seed(7)
    est = marginal.log_marginal_likelihood(model, guides[kind], x, num_samples=K)
    estimates[kind] = est
    mean_se = est.stderr.pow(2).sum().sqrt().item() / len(x)
    error = (est.log_marginal.mean() - exact.mean()).item()
    within = ((est.log_marginal - exact).abs() < 4 * est.stderr).double().mean().item()
    print(
        f"{kind:10s} K={K}: error of the mean {error:+.5f} = {error / mean_se:+.1f} SE (SE {mean_se:.5f}); "
        f"mean ESS {est.ess.mean():.1f}; {100 * within:.0f}% of points within 4 SE"
    )
    if kind == "wide":
        assert (
            abs(error) < 4 * mean_se
        ), "importance-sampled log p(x) is off by more than 4 SE"
        assert within >= 0.95

# %%
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
for color, (kind, rungs) in zip(["C0", "C3"], ladders.items()):
    ks, values = list(rungs), [v for v, _ in rungs.values()]
    a.errorbar(
        ks,
        values,
        yerr=[2 * s for _, s in rungs.values()],
        marker="o",
        capsize=3,
        color=color,
        label=f"IWAE_K, {kind} proposal (±2 SE)",
    )
a.axhline(truth_mean, color="black", label="exact log p(x)")
a.set_xscale("log")
bottom = (
    ladders["mean field"][1][0] - 0.3
)  # zoom on the approach; mark rungs below the view
for color, rungs in zip(["C0", "C3"], ladders.values()):
    for k, (v, _) in rungs.items():
        if v < bottom:
            a.annotate(
                f"IWAE_{k} = {v:.2f} (off scale)",
                (k, bottom),
                xytext=(6, 8),
                textcoords="offset points",
                color=color,
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": color},
            )
a.set(
    xlabel="K (importance samples)",
    ylabel="mean over data points [nats]",
    ylim=(bottom, truth_mean + 0.1),
    title="linear-Gaussian: ELBO = IWAE_1 <= IWAE_K <= log p(x)",
)
a.legend(fontsize=8)
bins = torch.linspace(0, 1, 41).tolist()
for color, (kind, est) in zip(["C0", "C3"], estimates.items()):
    b.hist(
        (est.ess / K).tolist(),
        bins=bins,
        color=color,
        alpha=0.6,
        label=f"{kind} proposal",
    )
b.axvline(1.0, color="black", linestyle=":", label="exact proposal (ESS = K)")
b.set(
    xlabel=f"ESS / K  (K = {K})",
    ylabel="data points",
    title="effective sample size per data point",
)
b.legend(fontsize=8)
saved = plots.save(fig, FIGURES / "05_linear_gaussian_ladder.png")

# %% [markdown]
# ## Part 2: a VAE on digits
#
# There is no closed form now, but the ladder must still rise and the ESS tells us how much to trust
# the top rung. A trained VAE's guide is a decent proposal, so the estimate settles within a fraction
# of a nat of its limit after a few hundred samples; the gap between the ELBO and the top rung is the
# average $\mathrm{KL}(q\,\|\,p(z\mid x))$ the guide leaves, minus what the finite $K$ still misses.

# %%
cfg = config.load(overrides={"train.epochs": EPOCHS, "train.device": "cpu"})
digits = data.load(cfg.data)
pyro.set_rng_seed(0)
net = vae.build(cfg, digits.data_dim)
train.fit(net, digits, cfg)
x_test = digits.test[:100] if SMOKE else digits.test
DIGIT_KS = [1, 10, 100] if SMOKE else [1, 10, 100, 1000]
pyro.set_rng_seed(1)
digit_ladder = ladder(net.model, net.guide, x_test, DIGIT_BUDGET, DIGIT_KS)
print(
    "digits: "
    + "  ".join(f"IWAE_{k} {v:.3f}±{se:.3f}" for k, (v, se) in digit_ladder.items())
)
values = list(digit_ladder.values())
for (v0, s0), (v1, s1) in zip(values, values[1:]):
    assert v1 > v0 - 3 * math.hypot(s0, s1), "IWAE fell as K grew"
(elbo, elbo_se), (top, top_se) = values[0], values[-1]
assert top > elbo + 3 * math.hypot(
    elbo_se, top_se
), "the top rung should be strictly above the ELBO"

pyro.set_rng_seed(2)
digit_est = marginal.log_marginal_likelihood(
    net.model, net.guide, x_test, num_samples=DIGIT_KS[-1]
)
print(
    f"K = {DIGIT_KS[-1]}: log p(x) = {digit_est.log_marginal.mean():.3f} "
    f"± {digit_est.stderr.pow(2).sum().sqrt() / len(x_test):.4f}; ESS/K median "
    f"{(digit_est.ess / DIGIT_KS[-1]).median():.2f}"
)
plots.bound_ladder(
    DIGIT_KS[1:],
    [v for v, _ in values[1:]],
    [s for _, s in values[1:]],
    elbo,
    FIGURES / "05_digits_ladder.png",
)
fig, ax = plt.subplots(figsize=(5, 3.4))
ax.hist((digit_est.ess / DIGIT_KS[-1]).tolist(), bins=30, color="C2")
ax.set(
    xlabel=f"ESS / K  (K = {DIGIT_KS[-1]})",
    ylabel="test digits",
    title="digits VAE: effective sample size per test digit",
)
saved = plots.save(fig, FIGURES / "05_digits_ess.png")
