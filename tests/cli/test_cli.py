import json

import pytest

from pyro_vae import config as cfg
from pyro_vae.cli.app import main
from pyro_vae.registry import (
    DATASETS,
    FAMILIES,
    GUIDES,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    PRIORS,
)

FAST = [
    "--epochs",
    "2",
    "--latent-dim",
    "2",
    "--set",
    "model.hidden=[32]",
    "--eval-every",
    "1",
    "--no-progress",
]


def test_train_evaluate_sample_on_the_default_data(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(run)]) == 0
    for name in (
        "config.toml",
        "metrics.jsonl",
        "checkpoint.pt",
        "elbo.png",
        "reconstructions.png",
        "samples.png",
    ):
        assert (run / name).stat().st_size > 0, name
    saved = cfg.load(str(run / "config.toml"))
    assert saved == cfg.load(
        None,
        {
            "train.epochs": 2,
            "model.latent_dim": 2,
            "model.hidden": [32],
            "train.eval_every": 1,
        },
    )
    rows = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"epoch", "train_elbo", "test_elbo", "kl", "reconstruction"} <= set(rows[0])
    assert main(["evaluate", str(run), "--num-samples", "50", "--limit", "40"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["num_samples"] == 50 and result["n"] == 40
    assert (
        result["log_marginal"] >= result["elbo"] - 4 * 0.5
    )  # IS bound sits above the ELBO
    assert {
        "elbo",
        "log_marginal",
        "log_marginal_stderr",
        "iwae",
        "kl",
        "reconstruction",
        "active_units",
        "kl_per_dim",
    } <= set(result)
    assert set(result["iwae"]) == {"1", "10"} and len(result["kl_per_dim"]) == 2
    assert (run / "bound_ladder.png").exists() and (run / "kl_per_dim.png").exists()
    assert main(["sample", str(run), "--num", "8"]) == 0
    out = capsys.readouterr().out
    assert "test ELBO" in out and "log p(x)" in out


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {
        "families": FAMILIES.names(),
        "priors": PRIORS.names(),
        "guides": GUIDES.names(),
        "likelihoods": LIKELIHOODS.names(),
        "objectives": OBJECTIVES.names(),
        "networks": NETWORKS.names(),
        "datasets": DATASETS.names(),
    }
    assert {"mlp", "conv"} <= set(listed["networks"])
    assert {"digits", "mnist", "binarized-mnist", "array", "images"} <= set(
        listed["datasets"]
    )
    assert main(["list"]) == 0
    assert "num_pseudo=500" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--prior", "vampp"],
            "unknown prior 'vampp' (did you mean 'vamp'?); valid priors:",
        ),
        (
            ["--set", "guide.num_flows=2"],
            "unknown option 'num_flows' for guide 'diagonal'",
        ),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--beta", "-1"], "beta must be a finite number > 0"),
        (["--lr", "-0.1"], "lr must be a positive number"),
        (["--latent-dim", "0"], "latent_dim must be >= 1"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
        (["--set", "data.binarize=false"], "is not binary"),
        (["--dataset", "binarized-mnist"], "pass --data-dir DIR"),
        (
            ["--dataset", "binarized-mnist", "--data-dir", "/nonexistent"],
            "does not exist",
        ),
        (["--set", "train.epochs=many"], "[train] epochs must be of type int"),
        (["--set", "epochs"], "must look like SECTION.KEY=VALUE"),
        (["--config", "no_such_config"], "neither a file nor a packaged config"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_status_2(
    tmp_path, capsys, args, message
):
    code = main(["train", *FAST, "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_device_cuda_without_gpu_and_malformed_toml(tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        assert (
            main(["train", *FAST, "--out", str(tmp_path / "r"), "--device", "cuda"])
            == 2
        )
        assert "no CUDA GPU is visible" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nlatent_dim = = 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


@pytest.mark.slow
def test_existing_runs_are_not_overwritten_by_accident(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", *FAST, "--epochs", "1", "--out", run]) == 0
    assert main(["train", *FAST, "--out", run]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (
        main(["train", *FAST, "--out", run, "--resume"]) == 0
    )  # continues from epoch 1 to 2
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    from pyro_vae.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--prior", "nope", "--out", str(tmp_path)])


@pytest.mark.slow
def test_train_evaluate_sample_on_an_npz_of_colour_images(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "colour.npz"
    np.savez(
        path,
        train=(rng.random((40, 4, 4, 3)) < 0.3).astype(np.uint8) * 255,
        test=(rng.random((10, 4, 4, 3)) < 0.3).astype(np.uint8) * 255,
    )
    run = tmp_path / "run"
    args = ["--dataset", "array", "--data-path", str(path), "--out", str(run)]
    assert main(["train", *FAST, "--batch-size", "20", *args]) == 0
    record = json.loads((run / "data.json").read_text())
    assert record["shape"] == [3, 4, 4] and record["data_path"] == str(path)
    assert cfg.load(str(run / "config.toml")).data.data_path == str(path)
    assert main(["evaluate", str(run), "--num-samples", "10"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["n"] == 10
    before = (run / "samples.png").read_bytes()
    assert main(["sample", str(run), "--num", "4", "--seed", "1"]) == 0
    assert (run / "samples.png").read_bytes() == before  # train's figure is kept
    assert (run / "sample_grid.png").is_file()
    out = capsys.readouterr().out
    assert "latent_traversal.png" in out and "interpolation.png" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "arry"], "unknown dataset 'arry' (did you mean 'array'?)"),
        (["--dataset", "array"], "pass --data-path FILE"),
        (["--dataset", "images", "--data-dir", "/nonexistent"], "does not exist"),
        (["--image-size", "0", "4"], "image_size must be [height, width]"),
    ],
)
def test_bad_data_flags_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["train", *FAST, "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_run_trained_on_other_data_than_its_config_names_is_refused(tmp_path, capsys):
    """The low-level fit does not record the data: a checkpoint of 10-value rows under a
    config naming the digits (64 values) must not be scored on the digits, nor crash."""
    import torch

    from pyro_vae import data
    from pyro_vae.models import vae
    from pyro_vae.run import train

    config = cfg.load(None, {"model.hidden": [8], "train.epochs": 1})
    x = (torch.rand(60, 10) < 0.5).float()
    ds = data.Dataset("mine", x[:50], x[50:], (1, 10))
    train.fit(vae.build(config, 10), ds, config, tmp_path / "run")
    assert main(["evaluate", str(tmp_path / "run"), "--num-samples", "5"]) == 2
    err = capsys.readouterr().err
    assert "does not fit its config" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_reader_that_closes_the_pipe_early_gets_no_error(tmp_path):
    """`pyro-vae list | head -1`: the CLI stops quietly (exit 0, nothing on stderr), where it
    printed `error: Broken pipe` before."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae.cli", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
