"""Every size a user can set is checked against memory before allocating (issue 26, group
3): through the real command line, one ``error:`` line naming the setting."""

import pytest

from pyro_vae import config as cfg
from pyro_vae.config import sizes
from pyro_vae.errors import ConfigError

GIB = 2**30
FAST = ["--latent-dim", "2", "--set", "model.hidden=[16]", "--no-progress"]
HALF = "more than half of this machine's 16 GiB of memory; use smaller sizes"


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--network", "conv", "--set", "network.channels=[10000000]"],
            # convs 2 (1e7 * 16 + 1e7); linears 1.6e8 -> 256 -> 4 and 2 -> 256 -> 1.6e8
            "network.channels=[10000000] with network.features=256 on 1x8x8 data means "
            "8.24e+10 parameters and 3.2e+10 activations a step, about 1.43 TiB",
        ),
        (
            ["--guide", "iaf", "--set", "guide.flow_hidden=[100000000]"],
            # 2 flows of (2 + 16) -> 1e8 -> 5
            "guide.num_flows=2 with guide.flow_hidden=[100000000] on 64-value data means "
            "4.8e+09 parameters and 2e+10 activations a step, about 221 GiB",
        ),
        (
            ["--prior", "vamp", "--set", "prior.num_pseudo=1000000000"],
            # 1e9 pseudo-inputs of 64 values, each through the encoder (40 values)
            "prior.num_pseudo=1000000000 on 64-value data means 6.4e+10 parameters and "
            "4e+10 activations a step, about 1.22 TiB",
        ),
        (
            ["--prior", "mixture", "--set", "prior.num_components=10000000000"],
            "prior.num_components=10000000000 on 64-value data means 5e+10 parameters",
        ),
        (
            ["--elbo", "iwae", "--num-particles", "100000", "--batch-size", "100000"],
            "train.batch_size=100000 with objective.num_particles=100000 on 64-value data",
        ),
    ],
)
def test_sizes_that_cannot_fit(tmp_path, cli_error, monkeypatch, flags, message):
    monkeypatch.setattr(sizes, "memory_bytes", lambda: 16 * GIB)
    err = cli_error(["train", *FAST, *flags, "--out", str(tmp_path / "r")])
    assert err.startswith(message) and err.endswith(HALF), err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_the_estimate_is_what_refuses(monkeypatch):
    """Injected bug: with the estimate off (a huge machine) the same config passes."""
    config = cfg.load(None, {"network.name": "conv", "network.channels": [10**7]})
    monkeypatch.setattr(sizes, "memory_bytes", lambda: 16 * GIB)
    with pytest.raises(ConfigError):
        sizes.check_size(config, (1, 8, 8))
    monkeypatch.setattr(sizes, "memory_bytes", lambda: 2**70)
    sizes.check_size(config, (1, 8, 8))


def test_the_default_model_fits_and_its_count_is_exact():
    """The MLP count is exact: the default digits model's parameters, counted by torch."""
    from pyro_vae.models import build

    config = cfg.load(None, {})
    vae = build(config, (64,))
    counted = sum(p.numel() for p in vae.parameters())
    widths = [64, 200, 200, 20], [10, 200, 200, 64]
    assert counted == sum(sizes._dense(w) for w in widths)
    assert sizes.human(800) == "800 bytes" and sizes.human(3 * GIB) == "3 GiB"
