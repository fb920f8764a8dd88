"""The discretized logistic (mixture) likelihood for 8-bit pixels k/255."""

import json
import math

import pytest
import torch
import torch.distributions as td
import torch.nn.functional as F

from pyro_vae.errors import ConfigError, DataError
from pyro_vae.parts import discretized
from pyro_vae.parts.discretized import DiscretizedLogisticMixture
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import LIKELIHOODS

GRID = torch.arange(256, dtype=torch.float64) / 255


def extreme_params(k: int):
    """Per-pixel parameters (..., K) over a grid of means, scales and mixture weights: means
    far outside [0, 1], scales from e^-7 (sharper than a bin) to e^5 (flat)."""
    torch.manual_seed(0)
    loc = torch.tensor(
        [-6.0, -0.3, 0.0, 1e-3, 0.5, 0.999, 1.0, 1.7, 8.0], dtype=torch.float64
    )
    log_scale = torch.tensor([-7.0, -5.0, -2.0, 0.0, 5.0], dtype=torch.float64)
    loc, log_scale = torch.meshgrid(loc, log_scale, indexing="ij")
    shape = loc.shape + (k,)
    locs = loc.unsqueeze(-1) + 0.05 * torch.randn(shape, dtype=torch.float64) * (k > 1)
    return (
        3 * torch.randn(shape, dtype=torch.float64),
        locs,
        log_scale.unsqueeze(-1).expand(shape),
    )


def probabilities(d: DiscretizedLogisticMixture) -> torch.Tensor:
    """P(k/255) for the 256 values, last dimension (batch shape + (256,))."""
    values = GRID.reshape(256, *[1] * len(d.batch_shape)).expand(256, *d.batch_shape)
    return d.log_prob(values).exp().movedim(0, -1)


def total_probability_error(k: int) -> float:
    d = DiscretizedLogisticMixture(*extreme_params(k))
    return (probabilities(d).sum(-1) - 1).abs().max().item()


@pytest.mark.parametrize("k", [1, 3])
def test_the_256_probabilities_sum_to_one_for_every_pixel(k):
    assert total_probability_error(k) < 1e-10


def test_the_sum_check_catches_an_off_by_one_grid_and_unnormalized_weights(monkeypatch):
    """Injected bugs: 256 levels instead of 255 (bins of the wrong width); mixture weights
    not normalized (logits used as log-weights)."""
    with monkeypatch.context() as m:
        m.setattr(discretized, "LEVELS", 256)
        assert total_probability_error(1) > 1e-3
    with monkeypatch.context() as m:
        m.setattr(discretized.F, "log_softmax", lambda logits, dim: logits)
        assert total_probability_error(3) > 1e-3


def reference_probability(logits, loc, log_scale, x):
    """P(x) by logistic CDF differences in probability space (torch's Logistic built as a
    transformed uniform), the tails taking (-inf, 0.5/255] and [254.5/255, inf)."""
    weights = torch.softmax(logits, -1)
    total = torch.zeros(x.shape, dtype=torch.float64)
    for j in range(logits.shape[-1]):
        logistic = td.TransformedDistribution(
            td.Uniform(torch.zeros_like(loc[..., j]), torch.ones_like(loc[..., j])),
            [
                td.SigmoidTransform().inv,
                td.AffineTransform(loc[..., j], log_scale[..., j].exp()),
            ],
        )
        upper = torch.where(x > 254.5 / 255, 1.0, logistic.cdf(x + 0.5 / 255))
        lower = torch.where(x < 0.5 / 255, 0.0, logistic.cdf(x - 0.5 / 255))
        total = total + weights[..., j] * (upper - lower)
    return total


def log_prob_error(k: int) -> float:
    """Largest |P - reference P| over random pixels, the edge values 0 and 1 included (the
    reference subtracts CDFs near 1, so only its absolute error is small)."""
    torch.manual_seed(1)
    n = 500
    logits = torch.randn(n, k, dtype=torch.float64)
    loc = 1.4 * torch.rand(n, k, dtype=torch.float64) - 0.2
    log_scale = -4 + 3 * torch.rand(n, k, dtype=torch.float64)
    x = torch.randint(0, 256, (n,)).double() / 255
    x[:5], x[5:10] = 0.0, 1.0
    got = DiscretizedLogisticMixture(logits, loc, log_scale).log_prob(x)
    expected = reference_probability(logits, loc, log_scale, x)
    return (got.exp() - expected).abs().max().item()  # absolute: the reference cancels


@pytest.mark.parametrize("k", [1, 3])
def test_log_prob_matches_an_independent_computation(k):
    assert log_prob_error(k) < 1e-12


def test_the_reference_check_catches_a_wrong_grid_and_missing_tails(monkeypatch):
    """Injected bugs: 256 levels instead of 255; the edge values 0 and 1 scored like the
    others (CDF differences over one bin) instead of taking the tails."""
    with monkeypatch.context() as m:
        m.setattr(discretized, "LEVELS", 256)
        assert log_prob_error(1) > 1e-3

    def no_tails(k, a, b, width):
        return F.logsigmoid(a) + F.logsigmoid(-b) + discretized._log1mexp(width)

    with monkeypatch.context() as m:
        m.setattr(discretized, "_log_bin", no_tails)
        assert log_prob_error(1) > 1e-3
        assert total_probability_error(1) > 1e-3


def test_log_prob_stays_finite_where_probabilities_underflow():
    """A sharp logistic far from x: P is below float64's smallest number in probability space,
    but its log is finite (everything is computed as log-sigmoids)."""
    d = DiscretizedLogisticMixture(
        torch.zeros(3, 1), torch.tensor([[0.0], [1.0], [0.5]]), torch.full((3, 1), -7.0)
    )
    lp = d.log_prob(torch.tensor([1.0, 0.0, 0.0]))
    assert torch.isfinite(lp).all() and (lp < -100).all()


def head(k=1, d=6):
    return LIKELIHOODS.build(
        "discretized_logistic", Architecture(d, 2), {"num_components": k}
    )


@pytest.mark.parametrize("k,per_dim", [(1, 2), (4, 12)])
def test_head_shapes_mean_and_samples(k, per_dim):
    lik = head(k)
    assert lik.params_per_dim == per_dim
    out = torch.randn(7, 5, per_dim * 6, dtype=torch.float64)
    p = lik(out)
    assert p.batch_shape == (7, 5) and p.event_shape == (6,)
    assert p.mean.shape == (7, 5, 6) and lik.mean(out).shape == (7, 5, 6)
    samples = p.sample((3,))
    assert samples.shape == (3, 7, 5, 6)
    assert torch.equal(samples, torch.round(samples * 255) / 255)
    assert p.log_prob(samples).shape == (3, 7, 5)
    # the mean is the probability-weighted sum of the 256 values
    probs = probabilities(p.base_dist)
    torch.testing.assert_close(p.mean, (probs * GRID).sum(-1))


def test_samples_follow_the_distribution():
    """The sample mean of each pixel is within 4 standard errors of the exact mean."""
    torch.manual_seed(2)
    lik = head(3, d=4)
    p = lik(torch.randn(9 * 4, dtype=torch.float64)).base_dist
    n = 20000
    x = p.sample((n,))
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - p.mean).abs() < 4 * se + 1e-12).all()


def test_the_head_reads_parameter_major_decoder_output():
    """out.reshape(P, D): row 0 the locations (- 1/2), row 1 the log-scales (+ 2), one
    component."""
    lik = head(1, d=3)
    out = torch.tensor([-0.4, 0.0, 0.4, -9.0, -9.0, -9.0])
    torch.testing.assert_close(
        lik.mean(out), torch.tensor([0.1, 0.5, 0.9]), atol=1e-3, rtol=0
    )


def test_check_data_wants_the_8bit_grid():
    lik = head()
    lik.check_data(torch.randint(0, 256, (10, 6), dtype=torch.uint8).float() / 255)
    with pytest.raises(
        DataError, match=r"not on the 8-bit grid k/255 \(found 0.5 = 127.5/255\)"
    ):
        lik.check_data(torch.full((2, 6), 0.5))
    with pytest.raises(DataError, match="outside"):
        lik.check_data(torch.full((2, 6), 2.0))
    with pytest.raises(ConfigError, match="num_components must be >= 1"):
        head(0)


def test_evaluate_reports_bits_per_dim(tmp_path, capsys):
    from pyro_vae.cli.app import main

    run = tmp_path / "run"
    args = ["--epochs", "1", "--latent-dim", "2", "--set", "model.hidden=[8]"]
    assert main(["train", "--out", str(run), "--no-progress", *args]) == 0
    argv = ["evaluate", str(run), "--limit", "5", "--num-samples", "10"]
    assert main(argv) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["bits_per_dim"] == pytest.approx(
        -result["log_marginal"] / (64 * math.log(2))
    )
    assert f"{result['bits_per_dim']:.4f} bits/dim" in capsys.readouterr().out


def colour_images(n: int, seed: int = 0) -> torch.Tensor:
    """n random 3 x 8 x 8 uint8 images as rows k/255."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 192), generator=g).float() / 255


@pytest.mark.parametrize("objective", ["trace", "iwae"])
def test_conv_with_discretized_logistic_trains_and_scores(objective):
    from pyro.infer import SVI

    from pyro_vae import config as cfg
    from pyro_vae.estimate.marginal import log_marginal_likelihood
    from pyro_vae.models.vae import build
    from pyro_vae.registry import OBJECTIVES
    from pyro_vae.run.svi import ModuleOptimizer

    config = cfg.load(
        None,
        {
            "network.name": "conv",
            "network.channels": [4, 8],
            "network.features": 16,
            "likelihood.name": "discretized_logistic",
            "likelihood.num_components": 2,
            "model.latent_dim": 3,
            "objective.name": objective,
            "objective.num_particles": 2,
        },
    )
    vae = build(config, (3, 8, 8))
    assert vae.decoder(torch.zeros(1, 3)).shape == (1, 6 * 192)
    x = colour_images(10)
    vae.likelihood.check_data(x)
    elbo = OBJECTIVES.build(objective, None, config.objective.options)
    svi = SVI(vae.model, vae.guide, ModuleOptimizer(vae, 1e-2), loss=elbo)
    losses = [svi.step(x) for _ in range(2)]
    assert all(math.isfinite(v) for v in losses)
    estimate = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=8)
    assert torch.isfinite(estimate.log_marginal).all()
    assert vae.sample(2).shape == vae.reconstruct(x[:2]).shape == (2, 192)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_conv_with_discretized_logistic_on_cuda():
    from pyro_vae import config as cfg
    from pyro_vae.data import Dataset
    from pyro_vae.models.vae import build

    config = cfg.load(
        None,
        {
            "network.name": "conv",
            "likelihood.name": "discretized_logistic",
            "train.device": "cuda",
            "train.epochs": 2,
            "train.batch_size": 50,
        },
    )
    x = colour_images(200)
    vae = build(config, (3, 8, 8))
    from pyro_vae.run.train import fit

    metrics = fit(vae, Dataset("colour", x, x[:50], (8, 8)), config)
    assert all(p.is_cuda for p in vae.parameters())
    assert len(metrics) == 2 and math.isfinite(metrics[-1]["test_elbo"])
    assert vae.sample(3).is_cuda
