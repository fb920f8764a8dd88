"""Every bad input through the CLI is one line, ``error: ...``, exit status 2 (issue 17,
groups 2, 3, 4 (paths), 5 and 8)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from pyro_vae import config as cfg
from pyro_vae.cli.app import main
from pyro_vae.config import sizes as config_sizes
from pyro_vae.errors import ConfigError
from pyro_vae.models import vae as vae_mod

FAST = ["--latent-dim", "2", "--set", "model.hidden=[32]", "--no-progress"]
RANGE = "[0, 2**32) = [0, 4294967295]"
DEVICE = "use auto (CUDA when available), cpu, cuda or cuda:N"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(run)]) == 0
    return run


# group 2: the arguments of every subcommand
ARGUMENTS = [
    (
        ["evaluate", "RUN", "--limit", "0"],
        "--limit must be >= 2 (active units are a " "variance over data points), got 0",
    ),
    (
        ["evaluate", "RUN", "--limit", "-1"],
        "--limit must be >= 2 (active units are a "
        "variance over data points), got -1",
    ),
    (
        ["evaluate", "RUN", "--limit", "1"],
        "--limit must be >= 2 (active units are a " "variance over data points), got 1",
    ),
    (
        ["evaluate", "RUN", "--num-samples", "0"],
        "--num-samples must be between 1 and 1000000, got 0",
    ),
    (["evaluate", "RUN", "--device", "bogus"], f"unknown --device 'bogus'; {DEVICE}"),
    (["check", "--device", "bogus"], f"unknown --device 'bogus'; {DEVICE}"),
    (
        ["evaluate", "RUN", "--split", "valid"],
        "data set 'digits' has no split 'valid'; its splits: train, test",
    ),
    (
        ["sample", "RUN", "--num", "0"],
        "--num must be between 1 and 1024 (one grid of 16 images a row), got 0",
    ),
    (
        ["sample", "RUN", "--num", "-1"],
        "--num must be between 1 and 1024 (one grid of 16 images a row), got -1",
    ),
    (
        ["sample", "RUN", "--num", "100000"],
        "--num must be between 1 and 1024 (one grid of 16 images a row), got 100000",
    ),
    (
        ["sample", "RUN", "--out", "RUN/missing/s.png"],
        "--out 'RUN/missing/s.png': the directory 'RUN/missing' does not exist; create it "
        "first",
    ),
    (
        ["sample", "RUN", "--out", "RUN/s.gif"],
        "--out 'RUN/s.gif' must end in .png, .pdf, .svg (the image format)",
    ),
    (["sample", "RUN", "--seed", "-1"], f"--seed must be in {RANGE}, got -1"),
    (
        ["sample", "RUN", "--seed", str(2**32)],
        f"--seed must be in {RANGE}, got 4294967296",
    ),
    (
        ["evaluate", "RUN/nothing"],
        "no checkpoint at 'RUN/nothing': the run directory "
        "does not exist; train first (pyro-vae train --out RUN/nothing)",
    ),
]


@pytest.mark.parametrize("argv, message", ARGUMENTS)
def test_subcommand_arguments(trained, cli_error, argv, message):
    argv = [a.replace("RUN", str(trained)) for a in argv]
    assert cli_error(argv) == message.replace("RUN", str(trained))


# group 3: --set and config values
SIZE = "more than half of this machine's"
VALUES = [
    (
        ["--set", "model.hidden=[100000000]"],
        "model.hidden=[100000000] with model.latent_dim=2 on 64-value data means "
        "1.36e+10 parameters and 2e+10 activations a step, about 352 GiB, " + SIZE,
    ),
    (
        ["--latent-dim", "10000000000"],
        "model.hidden=[32] with "
        "model.latent_dim=10000000000 on 64-value data means 9.8e+11 parameters",
    ),
    (
        ["--set", "model.latent_dim=1e30"],
        "[model] latent_dim must be of type int (like " "10), got 1e+30 of type float",
    ),
    (["--seed", "-1"], f"[train] seed must be in {RANGE}, got -1"),
    (["--seed", str(2**32)], f"[train] seed must be in {RANGE}, got 4294967296"),
    (
        ["--set", "data.data_dir=3"],
        "[data] data_dir must be a directory path (a string), got 3",
    ),
    (
        ["--guide", "iaf", "--set", 'guide.flow_hidden="abc"'],
        "guide 'iaf' option flow_hidden must be a list of widths like [128], got 'abc'",
    ),
    (
        ["--prior", "flow", "--set", "prior.flow_hidden=[0]"],
        "prior 'flow' option flow_hidden must hold positive widths, got [0]",
    ),
    (
        ["--guide", "iaf", "--latent-dim", "20", "--set", "guide.flow_hidden=[16]"],
        "guide 'iaf' option flow_hidden=[16] is narrower than model.latent_dim=20 (an "
        "autoregressive flow needs every width >= the latent size); use "
        "flow_hidden=[128] or leave it unset",
    ),
    (
        ["--guide", "planar", "--elbo", "iwae", "--set", "objective.dreg=true"],
        "objective iwae with dreg = true needs a guide whose density can be evaluated at "
        "any z; guide 'planar' has no inverse: set objective.dreg=false or use guide iaf",
    ),
    (
        ["--elbo", "iwae", "--num-particles", "1000000000"],
        "[objective] num_particles must be <= 100000 (the cost grows with it), got "
        "1000000000",
    ),
]


@pytest.mark.parametrize("args, message", VALUES)
def test_config_values(tmp_path, cli_error, args, message):
    err = cli_error(["train", *FAST, *args, "--out", str(tmp_path / "r")])
    assert err.startswith(message), err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_config_file_that_is_not_utf8(tmp_path, cli_error):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[model]\nlatent_dim = 3 # \xff\n")
    assert cli_error(["train", "--config", str(bad)]) == (
        f"config '{bad}' is not UTF-8 text (byte 0xff at offset 25); save it as UTF-8, "
        f"as TOML requires"
    )


@pytest.mark.parametrize("latent, width", [(20, 128), (200, 400)])
def test_flow_hidden_sizes_follow_the_latent_size(latent, width):
    for part, name in (("guide", "iaf"), ("guide", "planar"), ("prior", "flow")):
        config = cfg.load(None, {"model.latent_dim": latent, f"{part}.name": name})
        vae = vae_mod.build(config, 64)
        module = vae.encoder if part == "guide" else vae.prior
        widths = {
            p.shape[0]
            for n, p in module.named_parameters()
            if "flows.0" in n and n.endswith("weight") and p.dim() == 2
        }
        assert width in widths, (name, widths)


def test_the_size_check_catches_what_it_is_for(monkeypatch):
    """Injected bug: a machine with more memory lets the huge model through."""
    config = cfg.load(None, {"model.hidden": [100_000_000]})
    with pytest.raises(ConfigError):
        cfg.check_size(config, 64)
    monkeypatch.setattr(config_sizes, "memory_bytes", lambda: 2**50)
    cfg.check_size(config, 64)


# group 4: --out in the way of a file
def test_out_that_is_a_file_or_below_a_file(trained, cli_error):
    file = trained / "checkpoint.pt"
    assert cli_error(["train", *FAST, "--out", str(file)]) == (
        f"run directory '{file}' is a file; choose a directory for --out"
    )
    assert cli_error(["train", *FAST, "--out", str(file / "sub")]) == (
        f"run directory '{file / 'sub'}' cannot be made: '{file}' is a file; choose a "
        f"directory for --out"
    )
    assert cli_error(["sample", str(trained), "--out", str(trained)]) == (
        f"--out '{trained}' must end in .png, .pdf, .svg (the image format)"
    )


# group 5: data
def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def mnist_like(directory: Path, train=(60, 20, 20), test=(20, 20, 20)) -> Path:
    rng = np.random.RandomState(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, shape in (("train", train), ("t10k", test)):
        images = rng.randint(0, 256, size=shape)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, 2051)
        labels = rng.randint(0, 10, size=shape[:1])
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, 2049)
    return directory


MNIST = ["--dataset", "mnist", "--batch-size", "20", *FAST]


def test_idx_files_of_no_images_or_of_different_sizes(tmp_path, cli_error):
    empty = mnist_like(tmp_path / "empty", train=(0, 28, 28))
    assert cli_error(["train", *MNIST, "--data-dir", str(empty)]) == (
        f"the MNIST 'train' images file in '{empty}' holds no images (its header says "
        f"0 x 28 x 28)"
    )
    mixed = mnist_like(tmp_path / "mixed", train=(60, 20, 20), test=(20, 28, 28))
    assert cli_error(["train", *MNIST, "--data-dir", str(mixed)]) == (
        f"the MNIST images in '{mixed}' differ in size: train 20x20, test 28x28; both "
        f"splits need one image size"
    )


@pytest.mark.slow
def test_20x20_idx_images_train_plot_and_resume_and_evaluate_after_the_data_moved(
    tmp_path, cli_error
):
    data, run = mnist_like(tmp_path / "data"), tmp_path / "run"
    assert (
        main(
            [
                "train",
                *MNIST,
                "--data-dir",
                str(data),
                "--epochs",
                "1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert (run / "reconstructions.png").stat().st_size > 0
    moved = tmp_path / "moved"
    shutil.move(data, moved)
    resume = ["train", *MNIST, "--epochs", "2", "--out", str(run), "--resume"]
    assert cli_error(resume).startswith(f"data directory '{data}' does not exist")
    assert main([*resume, "--data-dir", str(moved)]) == 0
    assert cfg.load(str(run / "config.toml")).data.data_dir == str(moved)
    shutil.move(moved, data)  # and back: evaluate is told where the files are now
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--limit",
                "5",
                "--num-samples",
                "3",
                "--data-dir",
                str(data),
            ]
        )
        == 0
    )
    assert main(["sample", str(run), "--num", "4", "--data-dir", str(data)]) == 0


# group 8: resume with another config
def test_resume_with_another_config_names_the_differing_keys(
    trained, tmp_path, cli_error
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    other = tmp_path / "other.toml"
    other.write_text(
        '[model]\nlatent_dim = 5\nhidden = [32]\n[prior]\nname = "vamp"\n'
        "[train]\nepochs = 3\n"
    )
    resume = ["train", "--no-progress", "--out", str(run), "--resume"]
    assert cli_error([*resume, "--config", str(other)]) == (
        f"cannot resume '{run}': the config differs from the checkpoint's in "
        f"model.latent_dim (2 -> 5), prior.name ('standard_normal' -> 'vamp'); only "
        f"train.epochs, data.data_dir, train.tensorboard and train.patience may change when "
        f"resuming "
        f"(start a new run with "
        f"another --out for other changes)"
    )
    assert cli_error([*resume, "--epochs", "3", "--lr", "0.5"]).startswith(
        f"cannot resume '{run}': the config differs from the checkpoint's in train.lr "
        f"(0.001 -> 0.5)"
    )
    assert main([*resume, "--epochs", "2"]) == 0  # epochs may change
