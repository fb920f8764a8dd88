"""Networks as registered parts: the conv pair's sizes and layout, the MLP, user networks."""

import math
from pathlib import Path

import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_vae import config as cfg
from pyro_vae.data import Dataset
from pyro_vae.errors import ConfigError
from pyro_vae.models.vae import VAE, build
from pyro_vae.parts import networks
from pyro_vae.parts.networks import Architecture, Network
from pyro_vae.registry import NETWORKS
from pyro_vae.run.svi import ModuleOptimizer
from pyro_vae.run.train import fit

SMALL_CONV = {
    "network.name": "conv",
    "network.channels": [4, 8],
    "network.features": 16,
}


def conv_arch(shape, **options):
    return Architecture.for_data(shape, 3, network="conv", network_options=options)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (2, 7, 9)])
@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_conv_sizes_for_any_image_shape(shape, kernel):
    arch = conv_arch(shape, channels=[4, 8], kernel=kernel, features=16)
    d = math.prod(shape)
    encoder, decoder = arch.encoder_trunk(), arch.decoder(params_per_dim=2)
    assert arch.feature_dim == 16
    assert encoder(torch.rand(5, d)).shape == (5, 16)
    assert encoder(torch.rand(3, 5, d)).shape == (3, 5, 16)  # particle x plate dims
    assert decoder(torch.randn(3, 5, 3)).shape == (3, 5, 2 * d)
    # the transposed convolutions land exactly on the image size: no crop, no padding
    last = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)][-1]
    grid = last(torch.zeros(1, last.in_channels, *arch.net.sizes()[1]))
    assert grid.shape[-2:] == shape[1:]


def rows_independent(net: nn.Module, dim: int) -> bool:
    """Whether each row of a batch is mapped on its own (stacked leading dims included)."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, dim)
    together = net(x)
    alone = torch.stack(
        [torch.stack([net(x[i, j : j + 1])[0] for j in range(4)]) for i in range(3)]
    )
    return torch.allclose(together, alone, atol=1e-5)


def test_conv_networks_map_each_row_on_its_own():
    arch = conv_arch((3, 8, 8), channels=[4, 8], features=16)
    assert rows_independent(arch.encoder_trunk(), 192)
    assert rows_independent(arch.decoder(), 3)


def test_the_row_check_catches_a_network_that_mixes_rows():
    """Injected bug: a batch-norm layer in training mode mixes the rows of a batch."""
    arch = conv_arch((3, 8, 8), channels=[4, 8], features=16)
    mixing = networks.Images((3, 8, 8), nn.Sequential(nn.BatchNorm2d(3), nn.Flatten()))
    assert rows_independent(arch.encoder_trunk(), 192)
    assert not rows_independent(mixing, 192)


def test_conv_decoder_output_is_parameter_major():
    """out.reshape(..., P, C, H, W)[..., j, c] is parameter j of channel c, the layout the
    likelihoods read (out.reshape(..., P, D))."""
    arch = conv_arch((3, 5, 6), channels=[4], features=8)
    decoder = arch.decoder(params_per_dim=2)
    last = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 12.0]))
    out = decoder(torch.randn(4, 3)).reshape(4, 2, 3, 5, 6)
    for j in range(2):
        for c in range(3):
            assert torch.all(out[:, j, c] == 10 * j + c)


def test_mlp_network_has_the_model_sections_sizes():
    arch = Architecture.for_data(64, 3, hidden=(16, 8), activation="relu")
    enc, dec = arch.encoder_trunk(), arch.decoder(params_per_dim=2)
    shapes = [tuple(m.weight.shape) for m in enc if isinstance(m, nn.Linear)]
    assert shapes == [(16, 64), (8, 16)] and arch.feature_dim == 8
    shapes = [tuple(m.weight.shape) for m in dec if isinstance(m, nn.Linear)]
    assert shapes == [(8, 3), (16, 8), (128, 16)]
    assert sum(isinstance(m, nn.ReLU) for m in dec) == 2


def test_build_takes_a_shape_or_a_flat_size():
    config = cfg.load(None, {"model.latent_dim": 2, "model.hidden": [8]})
    a, b = build(config, (64,)), build(config, 64)
    assert a.arch.shape == b.arch.shape == (64,)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert build(cfg.load(None, SMALL_CONV), (1, 8, 8)).arch.shape == (1, 8, 8)


@pytest.mark.parametrize(
    "shape,options,message",
    [
        ((64,), {}, "needs image data of shape (C, H, W)"),
        ((1, 4, 4), {"network.channels": [4, 4, 4]}, "shrink 4x4 images to nothing"),
        ((1, 8, 8), {"network.kernel": 7}, "kernel must be 3, 4 or 5"),
        ((1, 8, 8), {"network.channels": []}, "non-empty list of positive widths"),
        ((1, 8, 8), {"network.activation": "sigmoid"}, "activation must be one of"),
    ],
)
def test_conv_refuses_what_it_cannot_build(shape, options, message):
    config = cfg.load(None, {"network.name": "conv", **options})
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        build(config, shape)


def test_network_options_are_checked_with_the_config():
    with pytest.raises(ConfigError, match="unknown option 'chanels'.*did you mean"):
        cfg.load(None, {"network.name": "conv", "network.chanels": [4]})
    with pytest.raises(ConfigError, match="unknown network 'cnn'"):
        cfg.load(None, {"network.name": "cnn"})
    saved = cfg.load(None, SMALL_CONV)
    assert cfg.from_dict(saved.to_dict()) == saved  # [network] round-trips


class Tiny(Network):
    """A user's network: one linear layer each way."""

    def __init__(self, arch: Architecture, width: int):
        self.arch, self.feature_dim = arch, width

    def encoder(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.arch.data_dim, self.feature_dim), nn.Tanh())

    def decoder(self, params_per_dim: int = 1) -> nn.Module:
        return nn.Linear(self.arch.latent_dim, params_per_dim * self.arch.data_dim)


def test_a_network_registered_from_user_code(monkeypatch):
    monkeypatch.setattr(NETWORKS, "_factories", dict(NETWORKS._factories))

    @NETWORKS.register("tiny")
    def tiny(arch: Architecture, width: int = 5) -> Network:
        """One linear layer each way."""
        return Tiny(arch, width)

    x = (torch.rand(40, 64) > 0.5).float()
    config = cfg.load(
        None,
        {
            "network.name": "tiny",
            "network.width": 7,
            "model.latent_dim": 2,
            "train.epochs": 1,
            "train.batch_size": 20,
        },
    )
    vae = build(config, (1, 8, 8))
    assert isinstance(vae.decoder, nn.Linear) and vae.encoder.trunk[0].out_features == 7
    before = [p.detach().clone() for p in vae.parameters()]
    metrics = fit(vae, Dataset("toy", x, x[:10], (8, 8)), config)
    assert math.isfinite(metrics[-1]["test_elbo"])
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))


def test_a_decoder_passed_to_the_vae_directly():
    config = cfg.load(None, {"model.latent_dim": 2, "model.hidden": [8]})
    parts = build(config, 64)
    mine = nn.Sequential(nn.Linear(2, 32), nn.ELU(), nn.Linear(32, 64))
    vae = VAE(parts.arch, parts.encoder, mine, parts.likelihood, parts.prior)
    x = (torch.rand(10, 64) > 0.5).float()
    before = mine[0].weight.detach().clone()
    svi = SVI(vae.model, vae.guide, ModuleOptimizer(vae, 1e-2), Trace_ELBO())
    assert math.isfinite(svi.step(x))
    assert not torch.equal(before, mine[0].weight)
    with pytest.raises(ConfigError, match=r"to \(2, 10\), but the 'bernoulli'"):
        VAE(parts.arch, parts.encoder, nn.Linear(2, 10), parts.likelihood, parts.prior)


def test_the_readme_network_example_runs(monkeypatch):
    monkeypatch.setattr(NETWORKS, "_factories", dict(NETWORKS._factories))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### Networks")[1].split("```python")[1].split("```")[0]
    exec(block, {})
    config = cfg.load(None, {"network.name": "tiny", "network.width": 9})
    vae = build(config, (1, 8, 8))
    assert vae.encoder.trunk[0].out_features == 9 and vae.arch.feature_dim == 9
    x = (torch.rand(6, 64) > 0.5).float()
    svi = SVI(vae.model, vae.guide, ModuleOptimizer(vae, 1e-2), Trace_ELBO())
    assert math.isfinite(svi.step(x))
