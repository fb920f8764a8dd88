"""The per-epoch evaluation budget (run/epoch_eval.py): fixed seeded subsets, the interval,
rows that carry bits/dim, and training that does not depend on either."""

import math

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.models.vae import build
from pyro_vae.run import epoch_eval
from pyro_vae.run.epoch_eval import EVAL_SHARE, auto_interval, plan, subset
from pyro_vae.run.train import fit


def test_subset_is_fixed_by_its_seed_in_row_order_and_whole_when_small():
    x = torch.arange(50.0).unsqueeze(1)
    a, b, other = subset(x, 10, 3), subset(x, 10, 3), subset(x, 10, 4)
    assert torch.equal(a, b) and not torch.equal(a, other)
    assert len(a) == 10 and len(set(a[:, 0].tolist())) == 10
    assert torch.all(a[1:, 0] > a[:-1, 0])  # kept in the order of the split
    assert subset(x, 0, 3) is x and subset(x, 50, 3) is x and subset(x, 80, 3) is x


@pytest.mark.parametrize(
    "scored, trained, every",
    [
        (3000, 50000, 1),
        (1200, 1800, 7),
        (1300, 1497, 9),
        (180, 1800, 1),
        (181, 1800, 2),
    ],
)
def test_auto_interval_keeps_scored_rows_within_the_share_of_trained_rows(
    scored, trained, every
):
    assert auto_interval(scored, trained) == every
    assert scored / every <= EVAL_SHARE * trained + 1e-9  # within the budget
    if every > 1:  # and the smallest interval that is
        assert scored / (every - 1) > EVAL_SHARE * trained


def config_for(**overrides):
    return cfg.load(None, {"model.latent_dim": 2, "model.hidden": [16], **overrides})


@pytest.mark.parametrize(
    "n_train, n_test, n_valid", [(50000, 10000, 10000), (1800, 200, 0)]
)
def test_the_default_plan_scores_at_most_the_share_of_the_rows_trained(
    n_train, n_test, n_valid
):
    """Binarized MNIST's split sizes and a 2,000-row data set's (1,800 / 200)."""
    config = config_for()
    vae = build(config, (784,))
    x = torch.zeros(n_train, 784)
    p = plan(vae, config, x, x[:n_test], x[:n_valid] if n_valid else None, n_train)
    assert len(p.test) == min(n_test, 1000) and len(p.train) == 1000
    assert p.rows() / p.every <= EVAL_SHARE * n_train
    assert p.due(p.every, 10 * p.every) and p.due(7, 7)  # every interval, and the last
    assert p.due(1, 10 * p.every)  # the first, where the curve starts
    assert p.every <= 2 or not p.due(2, 10 * p.every)


def test_eval_every_and_eval_rows_are_obeyed_and_training_does_not_depend_on_them():
    digits = data.load(config_for().data)

    def run(**train):
        config = config_for(**{"train.epochs": 5, "train.batch_size": 250, **train})
        return fit(build(config, digits.shape), digits, config)

    every_epoch = run(**{"train.eval_every": 1, "train.eval_rows": 0})
    sparse = run(**{"train.eval_every": 2, "train.eval_rows": 50})
    assert [("test_elbo" in m) for m in sparse] == [True, True, False, True, True]
    assert all("test_elbo" in m for m in every_epoch)
    # evaluation draws from a forked random stream: the training run is the same
    assert [m["train_objective"] for m in sparse] == [
        m["train_objective"] for m in every_epoch
    ]


def test_the_rows_carry_bits_per_dim_for_a_likelihood_of_pixel_values():
    digits = data.load(config_for().data)
    for likelihood, bits in (("bernoulli", True), ("gaussian", False)):
        config = config_for(**{"likelihood.name": likelihood, "train.epochs": 1})
        vae = build(config, digits.shape)
        p = plan(vae, config, digits.train, digits.test, digits.test[:30], 1)
        row = p.scores(vae, seed=0)
        assert ("test_bits_per_dim" in row) == bits and (
            "valid_bits_per_dim" in row
        ) == bits
        if bits:
            d = digits.data_dim
            assert row["test_bits_per_dim"] == pytest.approx(
                -row["test_elbo"] / (d * math.log(2))
            )
            assert row["valid_bits_per_dim"] == pytest.approx(
                -row["valid_elbo"] / (d * math.log(2))
            )


def test_scores_leave_the_global_random_stream_alone():
    config = config_for()
    digits = data.load(config.data)
    vae = build(config, digits.shape)
    p = plan(vae, config, digits.train, digits.test, None, len(digits.train))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = p.scores(vae, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert p.scores(vae, seed=1) == first  # the seed fixes the draws
    assert epoch_eval.SUBSET_SEED  # subsets are seeded apart from the training seed
