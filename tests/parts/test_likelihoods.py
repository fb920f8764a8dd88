import pytest
import torch
import torch.distributions as td

from pyro_vae.errors import ConfigError, DataError
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import LIKELIHOODS

ARCH = Architecture(data_dim=6, latent_dim=2)


def test_registered_likelihoods():
    assert {"bernoulli", "continuous_bernoulli", "gaussian"} <= set(LIKELIHOODS.names())


def test_log_probs_match_torch():
    out = torch.randn(4, 6)
    binary = torch.randint(0, 2, (4, 6)).float()
    grey = torch.rand(4, 6)
    cases = [
        ("bernoulli", {}, binary, td.Bernoulli(logits=out)),
        ("continuous_bernoulli", {}, grey, td.ContinuousBernoulli(logits=out)),
        ("gaussian", {"scale": 0.3}, grey, td.Normal(out, 0.3)),
        ("gaussian", {"scale": 0.3, "learn_scale": True}, grey, td.Normal(out, 0.3)),
    ]
    for name, options, x, reference in cases:
        head = LIKELIHOODS.build(name, ARCH, options)
        p = head(out)
        assert p.event_shape == (6,) and p.batch_shape == (4,)
        torch.testing.assert_close(p.log_prob(x), reference.log_prob(x).sum(-1))


def test_gaussian_scale_is_learned_only_when_asked():
    fixed = LIKELIHOODS.build("gaussian", ARCH, {"scale": 0.5})
    learned = LIKELIHOODS.build("gaussian", ARCH, {"scale": 0.5, "learn_scale": True})
    assert list(fixed.parameters()) == [] and len(list(learned.parameters())) == 1
    torch.testing.assert_close(learned.scale, torch.full((6,), 0.5))
    with pytest.raises(ConfigError, match="scale must be > 0"):
        LIKELIHOODS.build("gaussian", ARCH, {"scale": 0.0})


def test_data_checks():
    bern = LIKELIHOODS.build("bernoulli", ARCH, {})
    with pytest.raises(
        DataError, match=r"not binary \(found the value 0.5\).*continuous_bernoulli"
    ):
        bern.check_data(torch.tensor([[0.0, 0.5]]))
    with pytest.raises(DataError, match="NaN or infinite"):
        bern.check_data(torch.tensor([[0.0, float("nan")]]))
    cb = LIKELIHOODS.build("continuous_bernoulli", ARCH, {})
    cb.check_data(torch.tensor([[0.0, 0.5]]))
    with pytest.raises(DataError, match="outside \\[0, 1\\]"):
        cb.check_data(torch.tensor([[0.0, 1.5]]))
    gauss = LIKELIHOODS.build("gaussian", ARCH, {})
    gauss.check_data(torch.tensor([[-3.0, 1.5]]))
    with pytest.raises(DataError, match="NaN or infinite"):
        gauss.check_data(torch.tensor([[float("inf")]]))


def test_bernoulli_pixels_equal_torch_at_extreme_logits_with_gradients():
    # the sum-then-negate log-density against torch's Bernoulli, broadcast over particles
    logits = (torch.randn(7, 3, 784, dtype=torch.float64) * 12).requires_grad_()
    logits.data[0, 0, :4] = torch.tensor([-100.0, 100.0, -30.0, 30.0])
    x = torch.randint(0, 2, (3, 784)).double()
    x[0, :4] = torch.tensor([0.0, 1.0, 1.0, 0.0])
    head = LIKELIHOODS.build("bernoulli", Architecture(784, 2), {})
    ours = head(logits).log_prob(x)
    reference = td.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert ours.shape == (7, 3)
    torch.testing.assert_close(ours, reference, rtol=1e-15, atol=0)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ref,) = torch.autograd.grad(reference.sum(), logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    "logits_shape, x_shape",
    [
        ((7, 3, 784), (3, 784)),  # many draws of several images
        ((7, 1, 784), (1, 784)),  # many draws of one image: the matrix-vector product
        ((5, 784), (784,)),
        ((784,), (4, 784)),  # the data broadcast the logits
        ((2, 1, 784), (1, 1, 784)),
    ],
)
def test_bernoulli_pixels_without_gradients_equal_torch(logits_shape, x_shape):
    # the evaluation form x.l - sum softplus(l), at extreme logits too
    logits = torch.randn(logits_shape, dtype=torch.float64) * 12
    logits.view(-1, 784)[0, :4] = torch.tensor([-100.0, 100.0, -30.0, 30.0])
    x = torch.randint(0, 2, x_shape).double()
    x.view(-1, 784)[0, :4] = torch.tensor([0.0, 1.0, 1.0, 0.0])
    head = LIKELIHOODS.build("bernoulli", Architecture(784, 2), {})
    reference = td.Bernoulli(logits=logits).log_prob(x).sum(-1)
    with torch.no_grad():
        ours = head(logits).log_prob(x)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_head_is_normalized_past_torchs_clamp(dtype):
    """Regression: torch's ContinuousBernoulli integrates to 0.80 at logit 20 and 0.32 at 50
    (float32). Composite midpoint rule over [0, 1] in float64, 20,000 nodes."""
    head = LIKELIHOODS.build("continuous_bernoulli", ARCH, {})
    n = 20_000
    x = ((torch.arange(n, dtype=torch.float64) + 0.5) / n).to(dtype)
    out = torch.tensor([20.0, 50.0, -50.0, 300.0], dtype=dtype)[:, None].expand(4, 6)
    p = head(
        out[:, None, :]
    )  # batch (4, 1), event (6,): every pixel has the same logit
    log_density = p.log_prob(x[:, None].expand(n, 6)) / 6  # one pixel's log-density
    total = log_density.double().exp().mean(-1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-4)
    grey = torch.rand(3, 6, dtype=dtype)
    assert torch.isfinite(
        head(torch.full((3, 6), 1e3, dtype=dtype)).log_prob(grey)
    ).all()
