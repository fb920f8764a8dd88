"""A new user's first day (issue 24): their own grey photographs as an .npz, a conv net and
the 8-bit likelihood, with no extra flag; the line per epoch; what a run records."""

import json

import numpy as np
import pytest

from pyro_vae.cli.app import main


@pytest.fixture
def grey_npz(tmp_path):
    """Grey 16 x 16 crops of scikit-learn's bundled photograph, integer levels 0-255."""
    from sklearn.datasets import load_sample_image

    grey = load_sample_image("china.jpg").mean(axis=2).round().astype(np.uint8)
    crops = [
        grey[r : r + 16, c : c + 16]
        for r in range(0, 400, 20)
        for c in range(0, 240, 20)
    ]
    path = tmp_path / "grey.npz"
    np.savez(path, np.stack(crops))  # one array: split by the seeded split
    assert len(np.unique(np.stack(crops))) > 100  # real grey levels, not two
    return path


def test_grey_npz_with_conv_and_the_8bit_likelihood_trains_and_reports_bits(
    grey_npz, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["train", "--data-path", str(grey_npz), "--network", "conv"]
    argv += ["--likelihood", "discretized_logistic", "--epochs", "3", "--no-progress"]
    argv += ["--set", "network.channels=[8,16]", "--latent-dim", "4", "--out", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training on 'grey.npz'" in out and "data.binarize=false" in out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines[:3]] == ["1/3", "2/3", "3/3"]
    assert "bits/dim" in lines[2]  # the last epoch is always scored
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    bits = rows[-1]["test_bits_per_dim"]
    assert 0 < bits < 8.5  # an 8-bit pixel costs at most ~8 bits under a fitted model
    assert f"{bits:.4f} bits/dim" in lines[2]
    env = json.loads((run / "environment.json").read_text())
    assert env[0]["start_epoch"] == 1 and env[0]["device"] == "cpu"
    assert {"python", "torch", "pyro", "pyro_vae"} <= set(env[0])


def test_binarized_data_under_the_8bit_likelihood_is_refused_naming_the_flag(
    grey_npz, capsys
):
    argv = [
        "train",
        "--data-path",
        str(grey_npz),
        "--likelihood",
        "discretized_logistic",
    ]
    assert main([*argv, "--set", "data.binarize=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.binarize = true") and "data.binarize=auto" in err


def test_data_path_implies_the_array_data_set_and_refuses_another(grey_npz, capsys):
    argv = ["train", "--data-path", str(grey_npz), "--dataset", "mnist"]
    assert main(argv) == 2
    assert "drop --dataset (--data-path implies array)" in capsys.readouterr().err


def test_a_line_per_epoch_stays_without_progress_bar(tmp_path, capsys):
    argv = ["train", "--epochs", "4", "--eval-every", "3", "--latent-dim", "2"]
    argv += [
        "--set",
        "model.hidden=[16]",
        "--no-progress",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert lines[0].startswith("epoch 1/4  train ELBO ")  # the first, the curve's start
    assert lines[1].startswith("epoch 2/4  training objective ")
    assert lines[2].startswith("epoch 3/4  train ELBO ") and "test ELBO" in lines[2]
    assert "KL" in lines[2] and lines[2].endswith(" s")
    assert lines[3].startswith("epoch 4/4  train ELBO ")  # and the last
    assert "\r" not in out and "\x1b" not in out  # plain text: stdout is not a terminal
