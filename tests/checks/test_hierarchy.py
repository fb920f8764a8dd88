"""The hierarchical family's check rows pass, and each injected bug makes them fail: a layer's
KL dropped from the model, a top-down merge with the wrong precision (issue #28.3), and a coupled
q(z_1 | x, z_2) that does not see z_2.
"""

import pytest
import torch
from pyro.poutine.messenger import Messenger

from pyro_vae.checks import harness as C
from pyro_vae.checks import hierarchy as H
from pyro_vae.checks.analytic_hierarchy import random_hierarchy
from pyro_vae.models import hierarchical
from pyro_vae.models.hierarchical import HierarchicalVAE


def _failed(rows):
    return [row.quantity for row in rows if not row.passed]


def test_the_suite_is_a_row_group_of_check():
    assert H.hierarchy_suite in C.SUITES


@pytest.mark.slow
def test_every_row_passes():
    rows = H.hierarchy_suite(None, torch.zeros(1), None)
    assert len(rows) == 32 and not _failed(rows), C.format_table(rows)


class _DropSite(Messenger):
    """Masks one sample site's log-density out (its KL term vanishes from every objective)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == self.name:
            msg["mask"] = False


@pytest.mark.slow  # (the quick tier stays under 3 minutes; CI runs it)
@pytest.mark.parametrize("inference", ["bottom_up", "ladder", "coupled"])
def test_a_dropped_layers_kl_fails_the_check(monkeypatch, inference):
    model = HierarchicalVAE.model

    def dropped(self, x, *args, **kwargs):
        with _DropSite("z1"):
            return model(self, x, *args, **kwargs)

    monkeypatch.setattr(HierarchicalVAE, "model", dropped)
    ladder = inference == "ladder"
    g = torch.Generator().manual_seed(H.SEED)
    truth = random_hierarchy(g, sizes=(2, 2) if ladder else (3, 2), ladder=ladder)
    x = truth.sample(50, g)
    failed = _failed(H.exact_rows(truth, x, inference))
    assert len(failed) == 5, failed  # the draw-by-draw identity and all four objectives
    failed = _failed(H.estimator_rows(truth, x, inference, g))
    assert any("MC ELBO" in q for q in failed), failed


@pytest.mark.slow  # (the quick tier stays under 3 minutes; CI runs it)
def test_a_merge_with_the_wrong_precision_fails_the_check(monkeypatch):
    def wrong(loc1, scale1, loc2, scale2):  # weights by 1/s, not 1/s^2
        p1, p2 = scale1.pow(-1), scale2.pow(-1)
        return (loc1 * p1 + loc2 * p2) / (p1 + p2), (1 / (p1 + p2)).sqrt()

    monkeypatch.setattr(hierarchical, "precision_weighted", wrong)
    g = torch.Generator().manual_seed(H.SEED)
    truth = random_hierarchy(g, sizes=(2, 2), ladder=True)
    x = truth.sample(50, g)
    failed = _failed(H.exact_rows(truth, x, "ladder"))
    assert len(failed) == 5, failed
    failed = _failed(H.estimator_rows(truth, x, "ladder", g))
    assert any("MC ELBO" in q for q in failed), failed


def test_the_bottom_up_rows_do_not_use_the_merge(monkeypatch):
    """The wrong merge only touches the ladder: the bottom-up exact rows still pass."""
    monkeypatch.setattr(hierarchical, "precision_weighted", None)
    g = torch.Generator().manual_seed(H.SEED)
    truth = random_hierarchy(g)
    assert not _failed(H.exact_rows(truth, truth.sample(20, g), "bottom_up"))


@pytest.mark.slow  # (the quick tier stays under 3 minutes; CI runs it)
def test_a_coupled_guide_blind_to_the_layer_above_fails_the_check(monkeypatch):
    """The injected bug: q(z_1 | x, z_2) reads (x, 0) instead of (x, z_2)."""
    import pyro

    def blind(self, x):
        flat = x.reshape(x.shape[0], -1)
        zs = [pyro.sample("z2", self.encoders[-1](x))]
        zero = torch.zeros_like(zs[0])
        inputs = torch.cat([flat.expand(*zero.shape[:-1], -1), zero], -1)
        zs.insert(0, pyro.sample("z1", self.encoders[0](inputs)))
        return zs

    monkeypatch.setattr(HierarchicalVAE, "_coupled", blind)
    g = torch.Generator().manual_seed(H.SEED)
    truth = random_hierarchy(g)
    x = truth.sample(50, g)
    failed = _failed(H.exact_rows(truth, x, "coupled"))
    assert len(failed) == 5, failed  # the draw-by-draw identity and all four objectives
    # (the diagonal-guide rows need not see it: on this model q's gain on z_2 is small)
