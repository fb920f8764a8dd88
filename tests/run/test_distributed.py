"""torchrun / DDP on the CPU (gloo): exactness against one process, resume across world sizes,
a killed worker, sharded evaluation. The torchrun launches are shared by module fixtures (each
launch costs seconds); tests/run/distributed_worker.py is what every process runs."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.cli import app as cli
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.estimate.evaluate import evaluate
from pyro_vae.models.vae import build
from pyro_vae.process import resolve_device
from pyro_vae.run import checkpoint, distributed, strategy
from pyro_vae.run.strategy import SingleProcess, Torchrun
from pyro_vae.run.train import CHECKPOINT_FILE, METRICS_FILE, fit

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

WORKER = Path(__file__).parent / "distributed_worker.py"
LAUNCH_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> list:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def environment() -> dict:
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def launch(
    out: Path, *modes: str, extra=(), ok: bool = True
) -> subprocess.CompletedProcess:
    """One torchrun with 2 processes on this machine; fails the test with its output
    (unless ``ok`` is False: a launch expected to fail)."""
    done = subprocess.run(
        torchrun(
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            *extra,
            str(WORKER),
            str(out),
            *modes,
        ),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    if done.returncode and ok:
        Path("/tmp/launch_fail.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0 or not ok, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_processes")
    launch(out, "onestep", "resume", "train5", "evaluate")
    return out


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Path:
    """Two torchrun invocations (one process each) meeting as --nnodes 2 on localhost; they
    also resume a one-process run to 3 epochs."""
    out = tmp_path_factory.mktemp("two_nodes")
    worker.run(out / "single", 2)
    port = str(free_port())
    nodes = [
        subprocess.Popen(
            torchrun(
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                str(WORKER),
                str(out),
                "onestep_trace",
                "train5",
                "resume_single",
            ),
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=LAUNCH_TIMEOUT)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(x[-3000:] for x in logs)
    return out


def reference(objective: str) -> dict:
    return worker.one_step(objective, slice(0, worker.BATCH))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_same_step(ref: dict, got: dict) -> None:
    """Same parameters after the step, and the same (all-reduced) gradients that made it."""
    scale = max(g.abs().max().item() for g in ref["grads"].values())
    assert max_difference(ref["grads"], got["grads"]) < 1e-6 * scale
    assert max_difference(ref["params"], got["params"]) < 1e-6
    assert got["row"]["train_objective"] == pytest.approx(
        ref["row"]["train_objective"], rel=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["trace", "meanfield", "iwae"])
def test_one_step_on_two_processes_equals_one_step_on_one(two_processes, objective):
    ranks = [torch.load(two_processes / f"onestep_rank{r}.pt") for r in (0, 1)]
    assert_same_step(reference(objective), ranks[0][objective])
    # DDP keeps the replicas identical
    assert (
        max_difference(ranks[0][objective]["params"], ranks[1][objective]["params"])
        == 0
    )
    assert ranks[0][objective]["row"]["world_size"] == 2


@pytest.mark.slow
def test_the_compiled_elbo_under_ddp_takes_the_one_process_step(tmp_path):
    """Issue #25: under torchrun the trace ELBO runs compiled (TorchScript) with the networks
    under DDP; its backward is autograd's, so DDP averages the gradients: the same step as
    one process on the whole batch (itself compiled), with the same noise."""
    launch(tmp_path, "onestep_jit")
    ranks = [torch.load(tmp_path / f"onestep_jit_rank{r}.pt") for r in (0, 1)]
    assert_same_step(reference("trace_jit"), ranks[0]["trace_jit"])
    grads = [r["trace_jit"]["grads"] for r in ranks]
    assert max_difference(*grads) == 0  # synchronised, not each rank's own
    assert ranks[0]["trace_jit"]["row"]["world_size"] == 2


@pytest.mark.slow
def test_the_exactness_check_catches_wrong_shards_and_unscaled_gradients(
    two_processes,
):
    """Injected in the worker: every rank taking the first shard, and the loss not multiplied
    by N before DDP averages (Adam's first step hides the factor: the gradients show it).
    """
    ref = reference("trace")
    got = torch.load(two_processes / "onestep_rank0.pt")
    for bug in ("bug_rows", "bug_scale"):
        with pytest.raises(AssertionError):
            assert_same_step(ref, got[bug])
    assert max_difference(ref["grads"], got["bug_scale"]["grads"]) > 1.0


@pytest.mark.slow
def test_two_nodes_one_step_equals_one_process(two_nodes):
    assert_same_step(
        reference("trace"), torch.load(two_nodes / "onestep_rank0.pt")["trace"]
    )


def metrics(run_dir: Path) -> list:
    return [
        json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def single_run5(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single5")
    config = cfg.load(None, {"train.epochs": 5})
    ds = data.load(config.data)
    pyro.clear_param_store()
    fit(build(config, ds.data_dim), ds, config, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launched", ["two_processes", "two_nodes"])
def test_five_epochs_write_one_run_directory_and_match_one_process_within_noise(
    launched, single_run5, request
):
    run = request.getfixturevalue(launched) / "run5"
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["world_size"] for r in rows} == {2}
    assert {p.name for p in run.iterdir()} >= {
        "config.toml",
        METRICS_FILE,
        CHECKPOINT_FILE,
    }
    assert not list(run.glob(".*.tmp"))
    # test ELBO of each final model on the same test set, with its standard error
    ds = data.load(cfg.load(None, {}).data)
    elbos = []
    for path in (run, single_run5):
        state = torch.load(path / CHECKPOINT_FILE, weights_only=True)
        vae = build(cfg.from_dict(state["config"]), ds.data_dim)
        vae.load_state_dict(state["model"])
        pyro.set_rng_seed(0)
        from pyro_vae.estimate.diagnostics import elbo_terms

        elbos.append(elbo_terms(vae, ds.test)["elbo"])
    se = (sum(e.var() / e.numel() for e in elbos)).sqrt().item()
    assert abs(elbos[0].mean() - elbos[1].mean()).item() < 4 * se
    assert metrics(single_run5)[-1]["world_size"] == 1


@pytest.mark.slow
def test_resume_under_torchrun_continues_exactly(two_processes):
    straight = torch.load(two_processes / "straight" / CHECKPOINT_FILE)
    resumed = torch.load(two_processes / "resumed" / CHECKPOINT_FILE)
    assert len(straight["rng_ranks"]) == 2
    for key in straight["model"]:
        torch.testing.assert_close(resumed["model"][key], straight["model"][key])
    drop = {"seconds"}
    assert [
        {k: v for k, v in r.items() if k not in drop} for r in resumed["metrics"]
    ] == [{k: v for k, v in r.items() if k not in drop} for r in straight["metrics"]]


@pytest.mark.slow
def test_a_distributed_run_resumes_in_one_process(two_processes, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_processes / "straight", run)
    saved = torch.load(run / CHECKPOINT_FILE)
    worker.run(run, 4, resume=True)
    assert [r["world_size"] for r in metrics(run)] == [2, 2, 2, 1]
    # rank 0's stream went on where the distributed run left it
    after = torch.load(run / CHECKPOINT_FILE)
    assert after["epoch"] == 4 and "rng_ranks" not in after
    assert not torch.equal(after["rng"]["torch"], saved["rng_ranks"][0]["torch"])


@pytest.mark.slow
def test_a_one_process_run_resumes_under_torchrun(two_nodes):
    assert [r["world_size"] for r in metrics(two_nodes / "single")] == [1, 1, 2]


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process(two_processes, tmp_path):
    run = tmp_path / "run5"
    shutil.copytree(two_processes / "run5", run)
    (run / "evaluation.json").unlink()
    args = ["evaluate", str(run), "--num-samples", "20", "--limit", "45"]
    assert cli.main(args + ["--device", "cpu"]) == 0
    sharded = json.loads((two_processes / "run5" / "evaluation.json").read_text())
    assert json.loads((run / "evaluation.json").read_text()) == sharded


@pytest.mark.slow
def test_a_killed_worker_stops_all_and_the_restart_resumes_exactly(
    two_processes, tmp_path
):
    """Rank 1 SIGKILLs itself in epoch 2; torchrun (--max-restarts 1) stops rank 0, restarts
    both, and the run resumes from epoch 1's checkpoint: the end state equals an uninterrupted
    run's."""
    done = launch(tmp_path, "kill", extra=("--max-restarts", "1"))
    assert "SIGKILL" in done.stderr or "Signal 9" in done.stderr or "-9" in done.stderr
    run = tmp_path / "killed"
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]
    killed = torch.load(run / CHECKPOINT_FILE)["model"]
    straight = torch.load(two_processes / "straight" / CHECKPOINT_FILE)["model"]
    for key in straight:
        torch.testing.assert_close(killed[key], straight[key])


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_both_with_one_line_and_the_run_resumes(tmp_path):
    """Rank 1 alone gets a NaN loss in epoch 2: both ranks agree before the step, stop at
    the same step with the same one-line error, exit 1 (torchrun's status); the epoch-1
    checkpoint is intact and --resume finishes the run."""
    done = launch(tmp_path, "nan", ok=False)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    lines = [x for x in output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 2 and lines[0] == lines[1], output[-3000:]
    assert "the loss became nan at epoch 2, step 2" in lines[0]
    assert "DistBackendError" not in output and "Connection closed" not in output
    run = tmp_path / "nan"
    assert [r["epoch"] for r in metrics(run)] == [1]
    assert torch.load(run / CHECKPOINT_FILE)["epoch"] == 1
    launch(tmp_path, "nan_resume")
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]


# ---- in one process ----


def test_shard_takes_the_ranks_contiguous_rows_and_refuses_an_uneven_batch():
    batch = torch.arange(12).reshape(6, 2)
    cpu = torch.device("cpu")
    assert Torchrun(cpu, rank=1, world_size=3).shard(batch).tolist() == [[4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="multiple of 4"):
        Torchrun(cpu, rank=0, world_size=4).shard(batch)
    assert SingleProcess(cpu).shard(batch) is batch


def test_rank_seeds_keep_rank_zero_and_differ_between_ranks_and_epochs():
    assert distributed.rank_seed(7, 0) == 7
    seeds = {distributed.rank_seed(7, r, e) for r in range(4) for e in range(3)}
    assert len(seeds) == 12


def test_evaluation_is_a_function_of_its_seed():
    config = cfg.load(None, {"model.hidden": [16], "model.latent_dim": 3})
    ds = data.load(config.data)
    vae = build(config, ds.data_dim)
    first = evaluate(vae, ds.test[:12], num_samples=20, seed=5)
    torch.rand(3)  # the global stream moves; the report does not
    assert evaluate(vae, ds.test[:12], num_samples=20, seed=5) == first
    assert evaluate(vae, ds.test[:12], num_samples=20, seed=6) != first


def small(**overrides):
    config = cfg.load(
        None,
        {
            "model.hidden": [32],
            "model.latent_dim": 3,
            "train.batch_size": 250,
            **overrides,
        },
    )
    ds = data.load(config.data)
    return config, ds, build(config, ds.data_dim)


def test_check_every_keeps_the_loss_on_the_device_and_trains_the_same():
    runs = []
    for every in (1, 5):
        config, ds, vae = small(**{"train.epochs": 1, "train.check_every": every})
        pyro.clear_param_store()
        row = fit(vae, ds, config)[0]
        runs.append((row, {n: p.detach().clone() for n, p in vae.named_parameters()}))
    (row1, p1), (row5, p5) = runs
    assert max_difference(p1, p5) < 1e-5
    assert row5["train_objective"] == pytest.approx(row1["train_objective"], rel=1e-5)


def test_check_every_still_stops_at_the_first_non_finite_step(monkeypatch):
    config, ds, vae = small(**{"train.epochs": 1, "train.check_every": 4})
    real, calls = distributed.TensorSVI.step, {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(distributed.TensorSVI, "step", step)
    with pytest.raises(TrainingError, match="the loss became nan at epoch 1, step 3"):
        fit(vae, ds, config)
    assert calls["n"] == 4  # checked once after 4 steps, not after each


def test_bf16_autocast_trains_on_the_cpu_and_bad_settings_are_refused():
    config, ds, vae = small(**{"train.epochs": 1, "train.precision": "bf16"})
    row = fit(vae, ds, config)[0]
    assert torch.isfinite(torch.tensor(row["test_elbo"]))
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        cfg.load(None, {"train.precision": "fp16"})
    with pytest.raises(ConfigError, match="check_every must be >= 1"):
        cfg.load(None, {"train.check_every": 0})
    config, ds, vae = small(
        **{"objective.name": "iwae", "objective.dreg": True, "train.check_every": 2}
    )
    with pytest.raises(ConfigError, match="DReG"):
        fit(vae, ds, config)


def test_torchrun_environment_without_a_rendezvous_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="launch with torchrun"):
        strategy.start(torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.slow
def test_the_gpu_check_script_runs_in_its_cpu_fallback(tmp_path):
    """benchmarks/gpu_check.sh at tiny sizes on the CPU: every section runs, in its own
    process, in the order the figures come first, and reports; the 2-process run records
    the backend its ranks used."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    env = {**environment(), "PYTHON": sys.executable, "TINY": "1"}
    done = subprocess.run(
        ["bash", str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,  # a few minutes on an idle CPU; sections in children of their own
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    assert report["tiny"] and not failed, report
    sections = ["speed", "evaluation", "bf16", "gpu_tests", "two_processes"]
    assert list(report["seconds"]) == sections
    assert report["environment"]["imports"]["pyro"]
    assert report["gpu_tests"]["rc"] == 0
    pair = report["two_processes"]
    assert pair["backend"] == pair["backend_expected"] == "gloo"
    assert pair["steps"]["world_size"] == 2 and pair["steps"]["rc"] == 0
    assert pair["train"]["rc"] == 0 and pair["evaluate"]["rc"] == 0
    assert pair["world_sizes"] == [2] and pair["checkpoint_on_cpu"]
    assert [s["batch_size"] for s in report["speed"]] == [100, 1000]
    for s in report["speed"]:
        assert s["library"]["steps_per_s"] > 0 and s["torch"]["steps_per_s"] > 0
        assert s["library_no_host_sync"]["steps_per_s"] > 0
    assert report["evaluation"]["images_per_s"] > 0
    assert report["evaluation"]["source"] in ("binarized-mnist test set", "synthetic")
    assert abs(report["bf16"]["difference"]) < 1.0  # nats, on a one-epoch model


def test_the_gpu_check_refuses_to_start_without_its_wheels(tmp_path):
    """On a machine that lacks pyro-ppl & co. and got no wheel folder, one clear line."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    env = {**environment(), "PYTHON": sys.executable, "FORCE_WHEELS": "1"}
    env["WHEELS"] = str(tmp_path / "no_wheels")
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "run benchmarks/gpu_wheels.sh" in done.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_restore_rng_gives_each_rank_its_recorded_stream_or_a_derived_one():
    """Rank r resumes rank r's recorded stream; a rank the checkpoint did not know (a run
    resumed on more processes) starts the stream of (seed, rank, epoch)."""

    def draws_after(state_of_rank):
        checkpoint.set_rng_state(state_of_rank)
        return torch.rand(4)

    states = []
    for r in range(2):
        pyro.set_rng_seed(100 + r)
        states.append(checkpoint.rng_state())
    saved = {"epoch": 3, "rng": states[0], "rng_ranks": states}
    expected = [draws_after(s) for s in states]
    cpu = torch.device("cpu")
    for r in range(2):
        Torchrun(cpu, r, 2).restore_rng(saved, seed=0)
        assert torch.equal(torch.rand(4), expected[r])
    Torchrun(cpu, 2, 3).restore_rng(saved, seed=0)
    fresh = torch.rand(4)
    pyro.set_rng_seed(distributed.rank_seed(0, 2, 3))
    assert torch.equal(fresh, torch.rand(4))
    # a one-process checkpoint (no rng_ranks) resumes rank 0 from its "rng"
    SingleProcess(cpu).restore_rng({"epoch": 3, "rng": states[1]}, 0)
    assert torch.equal(torch.rand(4), expected[1])


@pytest.fixture(scope="module")
def hierarchical_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hierarchical")
    launch(out, "onestep_hierarchical", "train_hierarchical")
    return out


def assert_same_adam_step(ref: dict, got: dict, eps: float = 1e-8) -> None:
    """``assert_same_step`` with the parameters compared to what the gradients' tolerance
    allows after Adam's first step, p - lr g / (|g| + eps): an entry g of 1e-7, summed in
    another order, moves by up to lr eps |dg| / (|g| + eps)^2 (the hierarchy has such).
    """
    scale = max(g.abs().max().item() for g in ref["grads"].values())
    assert max_difference(ref["grads"], got["grads"]) < 1e-6 * scale
    lr = ref["row"]["lr"]
    for name, g in ref["grads"].items():
        h = got["grads"][name]
        small = torch.minimum(g.abs(), h.abs())
        allowed = 1e-6 + 1.01 * lr * eps * (g - h).abs() / (small + eps) ** 2
        assert ((ref["params"][name] - got["params"][name]).abs() <= allowed).all()
    assert got["row"]["train_objective"] == pytest.approx(
        ref["row"]["train_objective"], rel=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(worker.HIERARCHICAL))
def test_hierarchical_step_on_two_processes_equals_one_step_on_one(
    hierarchical_processes, objective
):
    """Issue #28: the two-layer family (bottom-up, ladder) under torchrun takes the step one
    process takes on the whole batch, with the same noise at both layers."""
    ranks = [
        torch.load(hierarchical_processes / f"onestep_hier_rank{r}.pt") for r in (0, 1)
    ]
    assert_same_adam_step(reference(objective), ranks[0][objective])
    got = ranks[0][objective]["params"], ranks[1][objective]["params"]
    assert max_difference(*got) == 0
    with pytest.raises(AssertionError):  # the check sees a rank on the wrong rows
        assert_same_adam_step(reference("hier_bottom_up"), ranks[0]["bug_rows"])


@pytest.mark.slow
def test_hierarchical_family_trains_under_torchrun(hierarchical_processes):
    run = hierarchical_processes / "hier"
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {r["world_size"] for r in rows} == {2}
    assert all(torch.isfinite(torch.tensor(r["test_elbo"])) for r in rows)
    state = torch.load(run / CHECKPOINT_FILE, weights_only=True)
    assert state["config"]["model"]["family"] == "hierarchical"
