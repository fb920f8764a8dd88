"""Early stopping: the rule (run/stopping.py) and fit's use of it (stop, record why, keep
best.pt, resume)."""

import json

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.models.vae import build
from pyro_vae.run import checkpoint, stopping
from pyro_vae.run.stopping import stop_reason
from pyro_vae.run.train import BEST_FILE, METRICS_FILE, fit


def rows(valid):
    """Metrics rows with these validation ELBOs (None: an epoch not scored)."""
    out = []
    for epoch, v in enumerate(valid, start=1):
        out.append({"epoch": epoch} if v is None else {"epoch": epoch, "valid_elbo": v})
    return out


def first_stop(valid, patience, rule=stop_reason):
    """The epoch after which ``rule`` stops a run with these validation ELBOs."""
    for epoch in range(1, len(valid) + 1):
        if rule(rows(valid[:epoch]), patience):
            return epoch
    return None


# best at epoch 3; with patience 2 the run goes on through epoch 4 and stops after epoch 5
VALID = [-9.0, -8.0, -7.0, -7.5, -7.2, -7.1, -8.0]


def check_stops_exactly(rule) -> None:
    assert first_stop(VALID, 2, rule) == 5
    assert first_stop(VALID, 1, rule) == 4
    assert first_stop(VALID, 4, rule) == 7
    assert first_stop(VALID, 5, rule) is None
    assert first_stop(VALID, 0, rule) is None  # off
    assert first_stop([-3.0, -2.0, -1.0], 1, rule) is None  # always improving


def test_patience_counts_epochs_since_the_best_validation_elbo():
    check_stops_exactly(stop_reason)
    reason = stop_reason(rows(VALID[:5]), 2)
    assert "2 epochs" in reason and "epoch 3" in reason and "-7.00" in reason


def test_an_off_by_one_patience_counter_fails_the_check(monkeypatch):
    """The check above is a safety net: a counter one epoch early or late must fail it."""
    for shift in (-1, 1):
        real = stopping.best_epoch
        monkeypatch.setattr(stopping, "best_epoch", lambda m, s=shift: real(m) + s)
        with pytest.raises(AssertionError):
            check_stops_exactly(stop_reason)
        monkeypatch.undo()
    check_stops_exactly(stop_reason)


def test_epochs_not_scored_neither_stop_nor_count_as_improvements():
    assert stop_reason(rows([-1.0, -2.0, None]), 1) is None  # the last row has no score
    assert first_stop([-1.0, None, -2.0, None, -1.5], 2) == 3


def digits_with_valid(**overrides):
    config = cfg.load(
        None,
        {
            "model.latent_dim": 2,
            "model.hidden": [16],
            "train.batch_size": 250,
            "train.eval_every": 1,
            "train.lr": 0.05,  # large: the validation ELBO soon stops improving
            **overrides,
        },
    )
    ds = data.load(config.data)
    ds.valid = ds.test[:100]
    return config, ds


def test_fit_stops_records_why_keeps_best_and_resumes_only_with_more_patience(
    tmp_path, monkeypatch
):
    config, ds = digits_with_valid(**{"train.epochs": 40, "train.patience": 2})
    # validation ELBOs made up per epoch, so that the test does not hang on training luck
    made_up = iter([-50.0, -40.0, -45.0, -44.0, -35.0, -30.0] + [-60.0] * 40)
    scores = stopping_scores(monkeypatch, made_up)
    metrics = fit(build(config, ds.shape), ds, config, tmp_path)
    assert [m["epoch"] for m in metrics] == [
        1,
        2,
        3,
        4,
    ]  # best 2, then 3 and 4 no better
    assert "stopped" in metrics[-1] and "epoch 2" in metrics[-1]["stopped"]
    assert all("stopped" not in m for m in metrics[:-1])
    saved = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert saved[-1]["stopped"] == metrics[-1]["stopped"]
    assert checkpoint.load(tmp_path / BEST_FILE, need=("epoch",))["epoch"] == 2
    with pytest.raises(TrainingError, match="stopped early at epoch 4.*train.patience"):
        fit(build(config, ds.shape), ds, config, tmp_path, resume=True)
    more = cfg.load(None, {**flat(config), "train.patience": 3})
    resumed = fit(build(more, ds.shape), ds, more, tmp_path, resume=True)
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert "stopped" not in resumed[3]  # the old reason went when the run went on
    assert "epoch 6" in resumed[-1]["stopped"]  # -30 at epoch 6, then 3 worse
    assert checkpoint.load(tmp_path / BEST_FILE, need=("epoch",))["epoch"] == 6
    assert scores["calls"] == 9


def stopping_scores(monkeypatch, values):
    from pyro_vae.run import epoch_eval

    real = epoch_eval.EpochEvaluation.scores
    seen = {"calls": 0}

    def scores(self, vae, seed):
        seen["calls"] += 1
        return {**real(self, vae, seed), "valid_elbo": next(values)}

    monkeypatch.setattr(epoch_eval.EpochEvaluation, "scores", scores)
    return seen


def flat(config):
    return {
        f"{s}.{k}": v
        for s, values in config.to_dict().items()
        for k, v in values.items()
    }


def test_patience_without_a_validation_split_is_refused():
    config = cfg.load(None, {"train.patience": 3, "train.epochs": 1})
    ds = data.load(config.data)
    with pytest.raises(
        ConfigError, match="no validation split: set data.valid_fraction"
    ):
        fit(build(config, ds.shape), ds, config)


def test_patience_off_trains_every_epoch():
    config, ds = digits_with_valid(**{"train.epochs": 3})
    torch.manual_seed(0)
    assert len(fit(build(config, ds.shape), ds, config)) == 3
