"""The run directory: lock, atomic epoch commit, recovery after kill -9, --overwrite,
orphaned temporaries, SIGINT/SIGTERM (issue 17, groups 6 and 7)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.cli.app import main
from pyro_vae.run import checkpoint
from pyro_vae.run import lock as run_lock
from pyro_vae.run import rundir

TINY = [
    "--dataset",
    "binarized-mnist",
    "--latent-dim",
    "2",
    "--set",
    "model.hidden=[16]",
    "--batch-size",
    "50",
    "--set",
    "objective.jit=false",  # a compiled ELBO costs seconds in every new process
    "--eval-every",
    "1",  # every epoch scored, so that best.pt moves
    "--no-progress",
]
EPOCHS = 4


def write_amat(directory: Path, seed: int = 0) -> Path:
    """A tiny binarized-MNIST look-alike (random bits) with train/valid/test splits, so that
    best.pt is written."""
    rng = np.random.RandomState(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 200), ("valid", 50), ("test", 50)):
        bits = (rng.rand(n, 784) < 0.2).astype(int)
        lines = "".join(" ".join(map(str, row)) + "\n" for row in bits)
        (directory / f"binarized_mnist_{split}.amat").write_text(lines)
    return directory


def tiny(data_dir: Path, *more: str) -> list:
    return ["train", *TINY, "--data-dir", str(data_dir), *more]


def rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def strip(metrics: list) -> list:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def temporaries(run: Path) -> list:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


def last_best(metrics: list) -> int:
    """The last epoch with the highest validation ELBO, computed here independently."""
    top = max(m["valid_elbo"] for m in metrics)
    return max(m["epoch"] for m in metrics if m["valid_elbo"] == top)


def assert_consistent(run: Path) -> dict:
    """What a recovered run directory must be: checkpoint.pt loads, metrics.jsonl holds its
    rows exactly, best.pt is the checkpoint of the best epoch, nothing temporary is left.
    """
    assert temporaries(run) == []
    assert not (run / rundir.REPLACED).exists()
    assert not (run / rundir.REPLACING).exists()
    state = checkpoint.load(run / "checkpoint.pt", need=tuple(checkpoint.KEYS))
    assert [m["epoch"] for m in state["metrics"]] == list(range(1, state["epoch"] + 1))
    assert rows(run / "metrics.jsonl") == state["metrics"]
    best = checkpoint.load(run / "best.pt", need=tuple(checkpoint.KEYS))
    assert best["epoch"] == last_best(state["metrics"])
    assert best["metrics"] == state["metrics"][: best["epoch"]]
    return state


SERVER = r"""
import json, os, sys
from pyro_vae.cli import main
import pyro_vae.plots, pyro_vae.evaluate, torch._dynamo  # imported once, before forks
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.update(job["env"])
        out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(out, 2)
        try:
            rc = main(job["argv"])
        except BaseException:
            import traceback
            traceback.print_exc()
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class ForkServer:
    """One Python process with pyro_vae imported that forks a child per command: a kill -9
    cycle costs a fork instead of a 3 s interpreter start."""

    def __init__(self, cwd: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.log = cwd / "child.log"

    def start(self, argv, fault=None) -> int:
        env = {checkpoint.FAULT_ENV: fault or ""}
        job = {"argv": argv, "env": env, "log": str(self.log)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self) -> int:
        return int(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


POINTS = (
    "config-written",
    "before-commit",
    "tmp-written",
    "committed",
    "best-written",
    "metrics-written",
)


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_a_consistent_run_that_resumes_exactly(
    tmp_path,
):
    data = write_amat(tmp_path / "data")
    server = ForkServer(tmp_path)
    try:
        server.start(tiny(data, "--epochs", str(EPOCHS), "--out", "reference"))
        assert server.wait() == 0, server.log.read_text()
        reference = strip(rows(tmp_path / "reference" / "metrics.jsonl"))
        assert len(reference) == EPOCHS

        run, rng = tmp_path / "run", random.Random(17)
        kills = finished = overwrite_kills = cycle = 0
        while kills < 22:
            cycle += 1
            state = (
                checkpoint.load(run / "checkpoint.pt")
                if (run / "checkpoint.pt").exists()
                else None
            )
            if state is not None and state["epoch"] == EPOCHS:
                mode = ["--overwrite"]  # replace the finished run: kill the new one
                points = POINTS + ("moving-aside",)
            else:
                mode = ["--resume"] if state is not None else []
                points = POINTS
            # two starts run without a fault (and the next ones --overwrite the run)
            point = "none" if cycle in (5, 15) else rng.choice(points + ("timer",))
            left = EPOCHS - (
                state["epoch"] if state and not mode == ["--overwrite"] else 0
            )
            visits = 1 if point in ("config-written", "moving-aside") else left
            fault = (
                None
                if point in ("timer", "none")
                else f"{point}:{rng.randint(1, visits)}"
            )
            pid = server.start(
                tiny(data, "--epochs", str(EPOCHS), "--out", "run", *mode), fault
            )
            if point == "timer":  # a kill at a random time, from outside
                time.sleep(rng.uniform(0.05, 0.8))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            code = server.wait()
            log = server.log.read_text()
            assert "Traceback" not in log, log
            if code == 0:  # no fault, or the timer fired too late: the run finished
                finished += 1
                assert strip(assert_consistent(run)["metrics"]) == reference
                continue
            assert code == -signal.SIGKILL, (code, log)
            kills += 1
            # right after the kill: at most the one temporary being written, and an
            # intact checkpoint if there is one at all
            assert len(temporaries(run)) <= 1
            if (run / "checkpoint.pt").exists():
                checkpoint.load(run / "checkpoint.pt", need=tuple(checkpoint.KEYS))
            killed_overwrite = "--overwrite" in mode
            with rundir.opened(run) as held:  # what the next start does first
                state = held.repair()
            if state is None:
                assert not killed_overwrite  # an overwrite never loses the old run
                continue
            state = assert_consistent(run)
            assert strip(state["metrics"]) == reference[: state["epoch"]]
            if killed_overwrite and state["epoch"] == EPOCHS:
                overwrite_kills += 1  # the old run is back, whole
        while True:  # finish the run
            state = checkpoint.load(run / "checkpoint.pt")
            if state["epoch"] == EPOCHS:
                break
            server.start(
                tiny(data, "--epochs", str(EPOCHS), "--out", "run", "--resume")
            )
            assert server.wait() == 0, server.log.read_text()
        assert strip(assert_consistent(run)["metrics"]) == reference
        assert kills >= 20 and finished >= 1 and overwrite_kills >= 1
    finally:
        server.close()


def test_a_second_process_on_the_same_run_directory_gets_a_clear_error(
    tmp_path, capsys
):
    run = tmp_path / "run"
    other = rundir.RunDir.acquire(run)  # another writer holds the lock
    try:
        code = main(["train", "--epochs", "1", "--no-progress", "--out", str(run)])
    finally:
        other.release()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == (
        f"error: run directory '{run}' is in use by another pyro-vae process (pid "
        f"{os.getpid()}); wait for it to finish, or choose another --out\n"
    )
    assert not (run / "config.toml").exists()


@pytest.mark.slow
def test_overwrite_replaces_the_whole_run_and_an_interrupted_one_loses_nothing(
    tmp_path, capsys, monkeypatch
):
    data = write_amat(tmp_path / "data")
    run = tmp_path / "run"
    assert main(tiny(data, "--epochs", "2", "--out", str(run))) == 0
    old = checkpoint.load(run / "best.pt")
    old_bytes = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    # an --overwrite run stopped before its first commit: the old run comes back whole
    real_commit = rundir.RunDir.commit

    def stop(self, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.RunDir, "commit", stop)
    argv = tiny(data, "--epochs", "2", "--latent-dim", "3", "--out", str(run))
    assert main([*argv, "--overwrite"]) == 130
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == old_bytes
    # a finished --overwrite run: nothing of the old run is left (best.pt included)
    monkeypatch.setattr(rundir.RunDir, "commit", real_commit)
    assert main([*argv, "--overwrite"]) == 0
    best = checkpoint.load(run / "best.pt")
    assert (
        best["config"]["model"]["latent_dim"]
        == 3
        != old["config"]["model"]["latent_dim"]
    )
    assert not (run / rundir.REPLACED).exists()
    # an unrelated file in --out is never moved or deleted
    (run / "notes.txt").write_text("mine")
    assert main([*argv, "--overwrite"]) == 0
    assert (run / "notes.txt").read_text() == "mine"


def test_orphaned_temporaries_are_removed_and_a_finished_run_is_repaired(
    tmp_path, capsys
):
    data = write_amat(tmp_path / "data")
    run = tmp_path / "run"
    assert main(tiny(data, "--epochs", "3", "--out", str(run))) == 0
    full = (run / "metrics.jsonl").read_text()
    good_best = (run / "best.pt").read_bytes()
    # what a kill -9 between the last commit and metrics.jsonl/best.pt leaves
    (run / "metrics.jsonl").write_text("".join(full.splitlines(True)[:2]))
    (run / "best.pt").unlink()
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"torn")
    (run / ".metrics.jsonl.a9b8.tmp").write_bytes(b"torn")
    capsys.readouterr()
    assert main(tiny(data, "--epochs", "3", "--out", str(run), "--resume")) == 2
    assert capsys.readouterr().err == (
        f"error: the run in '{run}' already finished 3 epochs (its files are "
        f"consistent); pass a larger --epochs to train further\n"
    )
    assert temporaries(run) == []
    assert (run / "metrics.jsonl").read_text() == full
    assert (
        checkpoint.load(run / "best.pt")["epoch"]
        == checkpoint.load(run / "checkpoint.pt")["epoch"]
        or (run / "best.pt").read_bytes() == good_best
    )
    assert_consistent(run)


def _cli(args, cwd):
    """The CLI in a child process with SIGINT at its default disposition, as a terminal starts
    it (a shell's background job, such as a suite run with `&`, inherits SIGINT ignored, and
    Python then leaves it ignored)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture
def cli():
    """``_cli``, with any child still running at the end of the test killed (a failed
    signal test would otherwise leave it training)."""
    children = []

    def launch(args, cwd):
        children.append(_cli(args, cwd))
        return children[-1]

    yield launch
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_stops_cleanly_and_says_how_to_resume(tmp_path, signum, cli):
    run = tmp_path / "run"
    args = ["train", "--epochs", "200", "--latent-dim", "2", "--no-progress"]
    proc = cli([*args, "--out", str(run)], tmp_path)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    epoch = checkpoint.load(run / "checkpoint.pt", need=tuple(checkpoint.KEYS))["epoch"]
    assert err.splitlines()[-1] == (
        f"interrupted; '{run}' keeps the checkpoint of epoch {epoch}: continue with "
        f"pyro-vae train --out {run} --resume"
    )
    assert "Traceback" not in err and temporaries(run) == []
    assert len(rows(run / "metrics.jsonl")) == epoch


@pytest.mark.slow
def test_sigint_while_starting_is_one_line(tmp_path, cli):
    proc = cli(["train", "--epochs", "1", "--out", str(tmp_path / "r")], tmp_path)
    time.sleep(0.4)  # torch is still importing
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT)
    assert err == "interrupted while starting; nothing was written\n"


@pytest.mark.slow
def test_the_nets_catch_what_they_are_for(tmp_path, capsys, monkeypatch):
    """Injected bugs: without repair a kill's leftovers stay (assert_consistent fails);
    without flock a second writer gets in."""
    data = write_amat(tmp_path / "data")
    run = tmp_path / "run"
    assert main(tiny(data, "--epochs", "2", "--out", str(run))) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines(True)
    (run / "metrics.jsonl").write_text(lines[0])
    (run / ".checkpoint.pt.zz.tmp").write_bytes(b"torn")
    monkeypatch.setattr(rundir.RunDir, "repair", lambda self: None)
    monkeypatch.setattr(rundir.RunDir, "recover", lambda self: None)
    with rundir.opened(run) as held:
        held.repair()
    with pytest.raises(AssertionError):
        assert_consistent(run)
    monkeypatch.undo()
    with rundir.opened(run) as held:
        held.repair()
    assert_consistent(run)

    first = rundir.RunDir.acquire(run)
    try:
        with pytest.raises(rundir.TrainingError, match="in use by another"):
            rundir.RunDir.acquire(run)
        monkeypatch.setattr(run_lock.fcntl, "flock", lambda fd, how: None)
        rundir.RunDir.acquire(run).release()  # the net is gone: no error
    finally:
        first.release()


def test_a_start_that_dies_while_putting_the_old_run_back_loses_nothing(
    tmp_path, monkeypatch
):
    run = tmp_path / "run"
    (run / rundir.REPLACED).mkdir(parents=True)
    old = {
        "best.pt": b"old best",
        "checkpoint.pt": b"old ckpt",
        "config.toml": b"old config",
        "metrics.jsonl": b"1\n",
    }
    for name, data in old.items():  # a replacement that never committed
        (run / rundir.REPLACED / name).write_bytes(data)
    (run / "config.toml").write_bytes(b"new config")
    real_move = rundir._move_all

    def dies_after_one(source, target):  # the process dies after moving one file back
        first = sorted(source.iterdir())[0]
        first.rename(target / first.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "_move_all", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        rundir.RunDir.acquire(run)
    monkeypatch.setattr(rundir, "_move_all", real_move)
    rundir.RunDir.acquire(run).release()  # the next start
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == old


# issue 26, group 6 -----------------------------------------------------------------------
def test_resume_rebuilds_a_metrics_file_that_is_not_utf8(tmp_path, capsys):
    data, run = write_amat(tmp_path / "data"), tmp_path / "run"
    assert main(tiny(data, "--epochs", "1", "--out", str(run))) == 0
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 1, \xff\xfe}\n\x80\n')
    assert main(tiny(data, "--epochs", "2", "--out", str(run), "--resume")) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert [m["epoch"] for m in assert_consistent(run)["metrics"]] == [1, 2]
    (run / "metrics.jsonl").write_bytes(b"\xff")
    rundir.settle(run)  # what evaluate and sample do first
    assert_consistent(run)


def test_the_lock_file_is_removed_when_a_run_ends(tmp_path):
    data, run = write_amat(tmp_path / "data"), tmp_path / "run"
    assert main(tiny(data, "--epochs", "1", "--out", str(run))) == 0
    assert not (run / ".lock").exists()
    assert main(["evaluate", str(run), "--limit", "5", "--num-samples", "2"]) == 0
    assert not (run / ".lock").exists()


def lock_race(run: Path, monkeypatch) -> None:
    """B opens the lock file just before A releases it (and unlinks it), then locks that
    orphaned file; a third writer C comes after: B and C must not both hold the run."""
    a = rundir.RunDir.acquire(run)
    real_open, opened = os.open, []

    def open_then_a_releases(path, *args):
        fd = real_open(path, *args)
        if not opened:
            opened.append(fd)
            a.release()  # A finishes: unlinks .lock and drops its flock
        return fd

    monkeypatch.setattr(rundir.os, "open", open_then_a_releases)
    b = rundir.RunDir.acquire(run)
    monkeypatch.setattr(rundir.os, "open", real_open)
    try:
        with pytest.raises(rundir.TrainingError, match="in use by another"):
            rundir.RunDir.acquire(run)
    finally:
        b.release()


def test_removing_the_lock_file_cannot_let_two_writers_in(tmp_path, monkeypatch):
    lock_race(tmp_path / "run", monkeypatch)
    # injected bug: a lock on an unlinked file counts as holding the run
    monkeypatch.setattr("pyro_vae.run.lock._still_linked", lambda fd, path: True)
    with pytest.raises(pytest.fail.Exception):
        lock_race(tmp_path / "other", monkeypatch)


def test_a_run_refused_before_it_writes_leaves_no_empty_directory(tmp_path, cli_error):
    out = tmp_path / "runs" / "m2"
    refused = ["train", "--family", "semi_supervised", "--network", "conv"]
    assert cli_error([*refused, "--out", str(out)]).startswith(
        "the semi_supervised family reads [x, c] rows"
    )
    assert not out.exists()
    kept = tmp_path / "mine"
    kept.mkdir()  # a directory the user made is theirs: it stays, empty or not
    cli_error([*refused, "--out", str(kept)])
    assert kept.is_dir()
    with rundir.opened(out) as run:  # a directory a run writes into stays
        (run.path / "config.toml").write_text("")
    assert (out / "config.toml").is_file()
