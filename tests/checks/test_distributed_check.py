"""The distributed check row (``checks/distributed.py``) passes on the library and fails,
naming itself, when a rank takes the wrong rows or its loss is not multiplied by the number of
ranks (mutation tests; the forked ranks inherit the injected bug)."""

import pytest
import torch

from pyro_vae.checks import distributed as check
from pyro_vae.checks.analytic_models import true_model
from pyro_vae.checks.harness import SUITES
from pyro_vae.run import distributed
from pyro_vae.run.strategy import Torchrun


def rows():
    generator = torch.Generator().manual_seed(0)
    truth = true_model(generator)
    checked = check.distributed_checks(truth, truth.sample(500, generator), generator)
    assert len(checked) == 1 and checked[0].quantity.startswith("distributed:")
    return checked[0]


def test_the_row_is_registered_and_passes():
    assert check.distributed_checks in SUITES
    assert rows().passed


def first_rows_only(self, batch):
    return batch[: batch.shape[0] // self.world_size]


@pytest.mark.parametrize("bug", ["rows", "scale"])
def test_the_row_fails_under_an_injected_bug(monkeypatch, bug):
    if bug == "rows":
        monkeypatch.setattr(Torchrun, "shard", first_rows_only)
    else:
        real = distributed.ELBOLoss.__init__
        monkeypatch.setattr(
            distributed.ELBOLoss,
            "__init__",
            lambda self, vae, elbo, scale=1.0: real(self, vae, elbo, 1.0),
        )
    assert not rows().passed
