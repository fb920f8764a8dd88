"""Checkpoints: foreign or damaged files at evaluate, sample and --resume (issue 17, group 1);
a full or read-only disk (group 4)."""

import argparse
import errno
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from pyro_vae.cli.app import main
from pyro_vae.run import checkpoint

FAST = ["--latent-dim", "2", "--set", "model.hidden=[32]", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *FAST, "--epochs", "2", "--out", str(run)]) == 0
    return run


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "weights_only" not in err
    return err[len("error: ") : -1]


def commands(run: Path):
    return {
        "evaluate": ["evaluate", str(run), "--num-samples", "5", "--limit", "20"],
        "sample": ["sample", str(run), "--num", "4"],
        "resume": ["train", *FAST, "--epochs", "3", "--out", str(run), "--resume"],
    }


def _bare_tensor(path, state):
    torch.save(torch.ones(3), path)


def _empty(path, state):
    torch.save({}, path)


def _no_model(path, state):
    torch.save({k: v for k, v in state.items() if k != "model"}, path)


def _foreign_object(path, state):
    torch.save({"model": argparse.Namespace(a=1)}, path)


def _pickle(path, state):
    path.write_bytes(pickle.dumps({"model": [1, 2, 3]}))


def _random(path, state):
    path.write_bytes(bytes(range(256)) * 4)


def _truncated(path, state):
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:2000])


def _shape(path, state):
    model = dict(state["model"])
    key = next(k for k, v in model.items() if v.dim() == 2)
    model[key] = torch.zeros(model[key].shape[0] + 1, model[key].shape[1])
    torch.save({**state, "model": model}, path)


FOREIGN = "is not a pyro-vae checkpoint"
CASES = {
    "plain-pickle": (
        _pickle,
        f"{FOREIGN}: it is not a file written by torch.save (wrong header "
        f"{pickle.dumps({'model': [1, 2, 3]})[:4]!r}); point at a run directory written "
        f"by pyro-vae train",
    ),
    "random-bytes": (
        _random,
        f"{FOREIGN}: it is not a file written by torch.save (wrong header "
        f"b'\\x00\\x01\\x02\\x03'); point at a run directory written by pyro-vae train",
    ),
    "bare-tensor": (_bare_tensor, f"{FOREIGN}: it holds a Tensor, not a dict"),
    "empty-dict": (_empty, f"{FOREIGN}: it lacks '"),
    "no-model": (_no_model, f"{FOREIGN}: it lacks 'model'"),
    "foreign-object": (
        _foreign_object,
        f"{FOREIGN}: it holds Python objects other than tensors and plain values, so it "
        f"was not loaded (loading it could run code)",
    ),
    "truncated": (_truncated, "is truncated or corrupt ("),
    "shapes": (_shape, "does not fit its config: parameter '"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_foreign_or_damaged_checkpoints_are_one_line_naming_the_file(
    trained, tmp_path, capsys, case
):
    make, message = CASES[case]
    state = checkpoint.load(trained / "checkpoint.pt")
    for command, argv in commands(tmp_path / "run").items():
        run = tmp_path / "run"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(trained, run)
        make(run / "checkpoint.pt", state)
        assert main(argv) == 2, command
        err = one_line(capsys)
        prefix = f"'{run / 'checkpoint.pt'}' " if message.startswith(FOREIGN) else ""
        assert err.startswith(prefix) and message in err, (command, err)
        assert str(run / "checkpoint.pt") in err


def test_the_shape_mismatch_names_the_parameter_and_both_shapes(
    trained, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = checkpoint.load(run / "checkpoint.pt")
    _shape(run / "checkpoint.pt", state)
    key = next(k for k, v in state["model"].items() if v.dim() == 2)
    rows, cols = state["model"][key].shape
    assert main(["evaluate", str(run), "--limit", "5", "--num-samples", "2"]) == 2
    assert one_line(capsys) == (
        f"checkpoint '{run / 'checkpoint.pt'}' does not fit its config: parameter "
        f"'{key}' has shape ({rows + 1}, {cols}) in the checkpoint but ({rows}, {cols}) "
        f"for the config (model sizes or the data's width changed after training)"
    )


def test_the_checks_catch_what_they_are_for(trained, monkeypatch):
    """Injected bug: without the structure check, a bare tensor reaches the caller."""
    path = trained.parent / "bare.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(checkpoint.TrainingError):
        checkpoint.load(path, need=("model",))
    monkeypatch.setattr(checkpoint, "check_structure", lambda *a: None)
    assert torch.is_tensor(checkpoint.load(path, need=("model",)))


# ---- a full or read-only disk ------------------------------------------------------------


def _no_space_on_fsync(monkeypatch, fail_at: int):
    """Every checkpoint write ends in fsync: the ``fail_at``-th one finds the disk full."""
    calls, real = {"n": 0}, os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)


# fsyncs: 1 config.toml; 2 environment.json; 3 epoch 1 (4 its metrics.jsonl); 5 epoch 2
@pytest.mark.parametrize("fail_at", [3, 5])
def test_a_full_disk_says_so_keeps_the_last_checkpoint_and_leaves_no_temporaries(
    tmp_path, capsys, monkeypatch, fail_at
):
    run = tmp_path / "run"
    _no_space_on_fsync(monkeypatch, fail_at)
    assert main(["train", *FAST, "--epochs", "3", "--out", str(run)]) == 1
    kept = (
        ", then resume with --resume (epoch 1's checkpoint is intact)"
        if fail_at == 5
        else " (no epoch was saved)"
    )
    assert one_line(capsys) == (
        f"cannot write '{run / 'checkpoint.pt'}': the disk is full (or the quota is used "
        f"up); free some space{kept}"
    )
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    if fail_at == 5:
        assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 1
    else:
        assert not (run / "checkpoint.pt").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (needs root); skip where mounting is not allowed."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.parametrize(
    "hidden, epoch_kept",
    [("[256]", None), ("[64]", 1)],  # checkpoints of 0.5 MB, 130 kB
)
def test_a_real_full_tmpfs_of_200k(tmpfs, capsys, hidden, epoch_kept):
    run = tmpfs("200k") / "run"
    argv = ["train", *FAST, "--set", f"model.hidden={hidden}", "--epochs", "6"]
    assert main([*argv, "--out", str(run)]) == 1
    err = one_line(capsys)
    kept = (
        " (no epoch was saved)"
        if epoch_kept is None
        else f", then resume with --resume (epoch {epoch_kept}'s checkpoint is intact)"
    )
    assert err == (
        f"cannot write '{run / 'checkpoint.pt'}': the disk is full (or the quota is used "
        f"up); free some space{kept}"
    )
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    if epoch_kept is None:  # the first checkpoint did not fit
        assert not (run / "checkpoint.pt").exists()
    else:  # a later one did not: the last good one is intact
        assert checkpoint.load(run / "checkpoint.pt")["epoch"] == epoch_kept


def test_read_only_file_system_for_train_evaluate_sample_and_resume(
    trained, tmpfs, capsys
):
    where = tmpfs("4m")
    run = where / "run"
    shutil.copytree(trained, run)
    readonly = subprocess.run(
        ["mount", "-o", "remount,ro", str(where)], capture_output=True
    )
    if readonly.returncode:
        pytest.skip("cannot remount read-only")
    why = "the location is not writable (Read-only file system); choose a writable directory"
    cases = {
        "new": (["train", *FAST, "--out", str(where / "new")], where / "new"),
        "resume": (
            ["train", *FAST, "--epochs", "3", "--out", str(run), "--resume"],
            run / ".lock",
        ),
        "evaluate": (["evaluate", str(run), "--limit", "5"], run),
        "sample": (["sample", str(run)], run),
    }
    for name, (argv, path) in cases.items():
        assert main(argv) == 1, name
        assert one_line(capsys) == f"cannot write '{path}': {why}", name
