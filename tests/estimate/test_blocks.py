import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.estimate.blocks import blockwise
from pyro_vae.models.vae import build


class Rank:
    """Rank ``rank`` of two simulated processes: the gather is left to the test (a sum of
    the two ranks' zero-filled parts)."""

    world_size = 2

    def __init__(self, rank: int):
        self.rank = rank

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value


def test_blockwise_results_do_not_depend_on_how_blocks_are_shared(monkeypatch):
    """Two simulated ranks (the gather replaced by a sum of their zero-filled parts) give one
    process's per-row results; without the per-block seeds they would not."""
    config = cfg.load(None, {"model.hidden": [16], "model.latent_dim": 3})
    ds = data.load(config.data)
    vae = build(config, ds.data_dim)
    x = ds.test[:23]

    def estimate(xb):
        from pyro_vae.estimate.marginal import log_marginal_likelihood

        return log_marginal_likelihood(vae.model, vae.guide, xb, num_samples=7)

    def sharded():
        parts = [blockwise(estimate, x, 3, 5, Rank(r)) for r in (0, 1)]
        return parts[0]["log_marginal"] + parts[1]["log_marginal"]

    one = blockwise(estimate, x, 3, 5)["log_marginal"]
    assert torch.equal(sharded(), one)
    monkeypatch.setattr(
        torch, "manual_seed", lambda seed: None
    )  # injected: no reseeding
    assert not torch.equal(sharded(), one)
