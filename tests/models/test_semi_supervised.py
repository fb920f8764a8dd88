"""The semi-supervised family (M2) through the seam: labels kept balanced and seeded, trained by
``fit`` with the enum objective, estimated (log p(x) with y summed out, the test error of
q(y | x)), and the CLI's --labels, labels.json, evaluate and sample --label."""

import json

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import data, models
from pyro_vae.cli.app import main
from pyro_vae.errors import ConfigError
from pyro_vae.estimate.classification import classification_error
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.run.train import fit

SMALL = {
    "model.family": "semi_supervised",
    "objective.name": "enum",
    "model.latent_dim": 4,
    "model.hidden": [32],
}


def test_m2_trains_through_fit_and_classifies():
    config = cfg.load(
        None, {**SMALL, "model.labels": 200, "train.epochs": 3, "train.lr": 0.01}
    )
    ds = data.load(config.data)
    m2 = models.build(config, ds.shape)
    metrics = fit(m2, ds, config)
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"]
    assert m2.records()["labels"]["count"] == 200
    result = classification_error(m2, ds.test, ds.test_labels)
    assert result["error"] < 0.5  # chance is 0.9
    est = log_marginal_likelihood(m2.model, m2.guide, ds.test[:20], num_samples=50)
    assert est.log_marginal.shape == (20,) and torch.isfinite(est.log_marginal).all()


def test_unlabelled_data_and_conv_are_refused():
    config = cfg.load(None, SMALL)
    m2 = models.build(config, 64)
    ds = data.load(config.data)
    ds.train_labels = None
    with pytest.raises(ConfigError, match="needs labels"):
        m2.training_rows(ds)
    with pytest.raises(ConfigError, match="only the mlp network"):
        models.build(cfg.load(None, {**SMALL, "network.name": "conv"}), (1, 8, 8))


def test_cli_labels_evaluate_and_sample_a_class(tmp_path, capsys):
    out = tmp_path / "ss"
    args = ["train", "--family", "semi_supervised", "--elbo", "enum", "--labels", "50"]
    args += ["--epochs", "1", "--latent-dim", "2", "--set", "model.hidden=[16]"]
    assert main(args + ["--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "labels.json").read_text())
    assert record["count"] == 50 and record["per_class"] == [5] * 10
    assert (out / "class_samples.png").is_file() and (out / "analogies.png").is_file()
    assert main(["evaluate", str(out), "--num-samples", "10", "--device", "cpu"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert 0 <= evaluation["classification"]["error"] <= 1
    assert "test error of q(y|x)" in capsys.readouterr().out
    assert main(["sample", str(out), "--label", "7", "--num", "8"]) == 0
    assert main(["sample", str(out), "--label", "10"]) == 2
    assert "between 0 and 9" in capsys.readouterr().err


def test_a_partly_labelled_npz_trains_m2_on_its_unlabelled_rows_too(
    tmp_path, cli_error
):
    import numpy as np

    ds = data.load(cfg.load(None, SMALL).data)
    partly = ds.train_labels.clone()
    partly[60:] = -1  # the first 60 rows labelled, the rest not
    np.savez(
        tmp_path / "partly.npz",
        train=ds.train.numpy(),
        test=ds.test.numpy(),
        train_labels=partly.numpy(),
        test_labels=ds.test_labels.numpy(),
    )
    source = ["--dataset", "array", "--data-path", str(tmp_path / "partly.npz")]
    args = ["train", "--family", "semi_supervised", "--elbo", "enum", *source]
    args += ["--epochs", "1", "--latent-dim", "2", "--set", "model.hidden=[16]"]
    out = tmp_path / "ss"
    assert main([*args, "--labels", "-1", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "labels.json").read_text())
    assert record["count"] == 60 and record["labelled_rows"] == 60
    assert max(record["kept_rows"]) < 60 and record["rows"] == len(partly)
    config = cfg.load(str(out / "config.toml"))
    m2 = models.build(config, ds.shape)
    rows = m2.training_rows(data.load(config.data))
    assert (rows[60:, -1] == -1).all() and torch.equal(
        rows[:60, -1].long(), partly[:60]
    )
    label_cvae = ["train", "--family", "conditional", "--set", "model.condition=label"]
    assert cli_error([*label_cvae, *source, "--out", str(tmp_path / "c")]) == (
        f"the conditional family with condition 'label' needs a label for every train "
        f"row, and data set 'partly.npz' marks {len(partly) - 60} of them -1 "
        f"(unlabelled); drop those rows, or train them with --family semi_supervised, "
        f"which sums an unknown label out"
    )
