"""TensorBoard logging: the event files, read back with TensorBoard's own reader, hold the
numbers of ``metrics.jsonl`` (each epoch once, also across a resume), the figures and the config
as hyper-parameters; off by default; a clear error without the package."""

import json
import math
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from pyro_vae.cli.app import main
from pyro_vae.run import tensorboard

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

FAST = ["--latent-dim", "2", "--set", "model.hidden=[16]", "--no-progress"]


def train(run: Path, *flags: str) -> int:
    return main(["train", *FAST, "--out", str(run), *flags])


def events(run: Path) -> EventAccumulator:
    board = EventAccumulator(
        str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    board.Reload()
    return board


def rows(run: Path) -> List[Dict]:
    return [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def mismatches(run: Path) -> List[str]:
    """What differs between the logged scalars and ``metrics.jsonl``: a tag missing or extra,
    an epoch missing or logged twice, a value other than the row's (in float32, TensorBoard's
    precision)."""
    board, table = events(run), rows(run)
    expected = {k for row in table for k in tensorboard.scalars(row)}
    out = [f"tags {sorted(set(board.Tags()['scalars']) ^ expected)} differ"]
    if set(board.Tags()["scalars"]) == expected:
        out = []
    for tag in sorted(expected & set(board.Tags()["scalars"])):
        logged = board.Scalars(tag)
        steps = [e.step for e in logged]
        wanted = [row["epoch"] for row in table if tag in row]
        if steps != wanted:
            out.append(f"{tag}: steps {steps}, metrics.jsonl has epochs {wanted}")
            continue
        for event, row in zip(logged, (r for r in table if tag in r)):
            value = float(np.float32(row[tag]))
            if event.value != value and not (
                math.isnan(value) and math.isnan(event.value)
            ):
                out.append(f"{tag} at epoch {event.step}: {event.value} != {value}")
    return out


def hparams_of(run: Path) -> Dict[str, object]:
    content = events(run).PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    )
    out = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tb") / "run"
    assert train(run, "--epochs", "3", "--tensorboard") == 0
    return run


def test_the_scalars_are_the_numbers_of_metrics_jsonl(logged):
    assert len(rows(logged)) == 3
    names = set(events(logged).Tags()["scalars"])
    assert {"train_elbo", "test_elbo", "kl", "reconstruction", "lr", "seconds"} <= names
    assert mismatches(logged) == []


def test_the_figures_and_the_config_are_logged(logged):
    board = events(logged)
    pngs = {p.stem for p in logged.glob("*.png")}
    assert {"elbo", "reconstructions", "samples"} <= pngs
    assert set(board.Tags()["images"]) == pngs
    image = board.Images("elbo")[-1]
    assert image.step == 3 and image.width > 100 and image.height > 100
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    hparams = hparams_of(logged)
    assert hparams["train.lr"] == pytest.approx(1e-3) and hparams["train.epochs"] == 3
    assert (
        hparams["model.hidden"] == "[16]" and hparams["prior.name"] == "standard_normal"
    )
    assert hparams["train.tensorboard"] == "true"
    assert "config/text_summary" in board.Tags()["tensors"]


def test_the_net_sees_a_wrong_value(tmp_path, monkeypatch):
    real = tensorboard.scalars

    def off_by_one(row):
        return {k: v + (k == "kl") for k, v in real(row).items()}

    monkeypatch.setattr(tensorboard, "scalars", off_by_one)
    assert train(tmp_path / "run", "--epochs", "1", "--tensorboard") == 0
    monkeypatch.setattr(tensorboard, "scalars", real)
    found = mismatches(tmp_path / "run")
    assert len(found) == 1 and found[0].startswith("kl at epoch 1"), found


@pytest.mark.slow
def test_a_resumed_run_logs_each_epoch_once(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert train(run, "--epochs", "2") == 0  # without TensorBoard at first
    assert not (run / "tensorboard").exists()
    assert train(run, "--epochs", "3", "--resume", "--tensorboard") == 0
    assert mismatches(run) == []  # epochs 1 and 2 written from the checkpoint's rows
    assert train(run, "--epochs", "4", "--resume", "--tensorboard") == 0
    assert mismatches(run) == []
    assert [e.step for e in events(run).Scalars("test_elbo")] == [1, 2, 3, 4]
    # the net: a log that is not rewritten at a resume shows epochs twice
    monkeypatch.setattr(tensorboard.shutil, "rmtree", lambda *a, **k: None)
    assert train(run, "--epochs", "5", "--resume", "--tensorboard") == 0
    assert any("steps [1, 2, 3, 4, 1," in m for m in mismatches(run)), mismatches(run)


@pytest.mark.slow
def test_off_by_default_and_a_new_run_moves_the_old_log_aside(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    assert not (run / "tensorboard").exists()
    config = run / "config.toml"
    assert "tensorboard = false" in config.read_text()
    assert train(run, "--epochs", "1", "--tensorboard", "--overwrite") == 0
    assert (run / "tensorboard").is_dir()
    assert train(run, "--epochs", "1", "--overwrite") == 0
    assert not (run / "tensorboard").exists()  # the replaced run's log went with it


def test_the_config_file_switches_it_on(tmp_path):
    config = tmp_path / "tb.toml"
    config.write_text("[train]\nepochs = 1\ntensorboard = true\n")
    assert train(tmp_path / "run", "--config", str(config)) == 0
    assert mismatches(tmp_path / "run") == []


def test_without_the_package_the_cli_says_what_to_install(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "run"
    assert train(run, "--epochs", "1", "--tensorboard") == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: train.tensorboard = true needs the tensorboard package"
    )
    assert "pip install tensorboard" in err and err.count("\n") == 1
    assert not (run / "checkpoint.pt").exists()


def test_from_python_it_needs_a_run_directory(tmp_path):
    import pyro_vae
    from pyro_vae.errors import ConfigError

    x = (np.random.default_rng(0).random((200, 16)) < 0.3).astype(np.float32)
    model = pyro_vae.Model(latent_dim=2, hidden=[8], epochs=2, tensorboard=True)
    with pytest.raises(ConfigError, match="writes into the run directory"):
        model.fit(x)
    model.fit(x, run_dir=tmp_path / "py")
    assert mismatches(tmp_path / "py") == []
