"""The GPU check: speed against plain PyTorch, the full MNIST test set at K = 5000, bf16 against
fp32, then the GPU tests and a 2-process run; one JSON file, the figures first.

Run it through ``benchmarks/gpu_check.sh`` (which installs what a bare accelerator machine lacks
from the wheels ``benchmarks/gpu_wheels.sh`` gathered, and bounds the whole run). Without CUDA it
runs at tiny sizes on the CPU (``--tiny``, what tests/run/test_distributed.py runs), so the
script cannot rot.

    python benchmarks/gpu_check.py --json OUT/gpu_check.json [--tiny] [--data-dir DIR]

Each section runs in a child process of its own under a time limit (``SECTIONS``: 460 s in
all), in this order, and the JSON is rewritten after each one, so a slow start or a hung
section costs only its own figures:

- ``speed``: ``speed_train.compare`` at batch 100 and 1000 (the library's step against a plain
  PyTorch VAE step on the same device), plus the library step with the loss kept on the device
  (``TensorSVI``, as ``train.check_every > 1`` runs it) to measure the per-step ``loss.item()``;
- ``evaluation``: seconds for importance-sampled log p(x) at K = 5000 on the 10,000 MNIST test
  images by the path ``pyro-vae evaluate`` takes (blocks seeded by index); ``source`` says
  ``synthetic`` (binary images of that size) when ``--data-dir`` did not travel;
- ``bf16``: test ELBO of one trained model under bf16 autocast and in fp32 with the same draws,
  the difference against the fp32 estimate's standard error;
- ``gpu_tests``: ``pytest -m gpu tests/test_gpu.py`` (exit status and pytest's summary line);
- ``two_processes``: ``benchmarks/torchrun_steps.py`` on two processes (steps/s, and the
  process group's ``backend`` as the ranks report it), then ``torchrun --nproc_per_node 2 -m
  pyro_vae.cli train`` and ``evaluate`` on the device and that run's checkpoint loaded on the
  CPU. The backend is NCCL on two or more GPUs and gloo on one (NCCL refuses two ranks on one
  device; ``distributed.join`` picks gloo then): ``backend_expected`` says which and why, and
  a run whose ranks report another backend is an error, never a silent fallback.

``environment`` records the interpreter, torch, CUDA, and which of the library's dependencies
import (and ``gpu_check.sh`` whether it installed the carried wheels).
"""

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import pyro
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import speed_train  # noqa: E402

from pyro_vae import config as cfg  # noqa: E402
from pyro_vae import data  # noqa: E402
from pyro_vae.estimate.diagnostics import elbo_terms  # noqa: E402
from pyro_vae.estimate.evaluate import importance_sampled  # noqa: E402
from pyro_vae.models.vae import build  # noqa: E402
from pyro_vae.run.strategy import SingleProcess  # noqa: E402
from pyro_vae.run.train import autocast, fit, train_step  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def command(args: List[str], timeout: float) -> Dict:
    began = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    # output to a file, not a pipe (a worker left behind must not block the read); a session
    # of its own, and on a timeout every descendant is killed (torchrun's workers too)
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            rc = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [child.pid, *descendants(child.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            child.wait()
            rc = 124
        log.seek(0)
        out = log.read()
        if rc == 124:
            out += f"\nkilled after {timeout:.0f} s"
    lines = [line for line in out.splitlines() if line.strip()]
    return {"rc": rc, "seconds": time.perf_counter() - began, "tail": lines[-6:]}


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (Linux: /proc/PID/task/TID/children), deepest last."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def gpu_tests(timeout: float) -> Dict:
    result = command(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py"],
        timeout,
    )
    result["summary"] = result["tail"][-1] if result["tail"] else ""
    return result


def expected_backend(device: torch.device) -> Dict:
    """The process group two ranks on ``device`` should get (see ``distributed.join``)."""
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        return {"backend_expected": "nccl", "why": "two GPUs, one rank on each"}
    if device.type == "cuda":
        why = "one GPU: NCCL refuses two ranks on one device, so the ranks share it via gloo"
        return {"backend_expected": "gloo", "why": why}
    return {"backend_expected": "gloo", "why": "CPU"}


def two_processes(out: Path, device: torch.device, tiny: bool, timeout: float) -> Dict:
    run = out / "two_process_run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    result: Dict = {"gpus": torch.cuda.device_count(), **expected_backend(device)}
    steps_json = out / "two_process_steps.json"
    result["steps"] = command(
        torchrun
        + ["benchmarks/torchrun_steps.py", "--json", str(steps_json)]
        + ["--device", device.type, "--batch", "100"]
        + (["--rounds", "1", "--steps", "3"] if tiny else ["--rounds", "5"]),
        timeout / 3,
    )
    if steps_json.is_file():
        steps = json.loads(steps_json.read_text())
        result["steps"].update(steps)
        result["backend"] = steps["backend"]
    epochs = "1" if tiny else "3"
    result["train"] = command(
        torchrun
        + ["-m", "pyro_vae.cli", "train", "--epochs", epochs, "--device", device.type]
        + ["--no-progress", "--overwrite", "--out", str(run)],
        timeout / 3,
    )
    result["evaluate"] = command(
        torchrun
        + ["-m", "pyro_vae.cli", "evaluate", str(run), "--device", device.type]
        + ["--num-samples", "50" if tiny else "1000"],
        timeout / 3,
    )
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        result["world_sizes"] = sorted({r["world_size"] for r in rows})
        result["test_elbo"] = rows[-1]["test_elbo"]
    report = run / "evaluation.json"
    if report.is_file():
        result["log_marginal"] = json.loads(report.read_text())["log_marginal"]
    checkpoint = run / "checkpoint.pt"
    if checkpoint.is_file():  # the CUDA -> CPU round trip of what the GPUs wrote
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        vae = build(cfg.from_dict(state["config"]), 64)
        vae.load_state_dict(state["model"])
        result["checkpoint_on_cpu"] = all(
            p.device.type == "cpu" for p in vae.parameters()
        )
    if result.get("backend") != result["backend_expected"]:
        result["error"] = (
            f"the ranks ran on backend {result.get('backend')!r}, expected "
            f"{result['backend_expected']!r} ({result['why']})"
        )
    return result


def tensor_stepper(device: torch.device, batch: int):
    """The library step with the loss left on the device (no ``loss.item()`` per step)."""
    config = cfg.load(
        None,
        {
            "model.latent_dim": speed_train.LATENT,
            "model.hidden": list(speed_train.HIDDEN),
            "train.batch_size": batch,
            "train.check_every": 100,  # what makes fit's step leave its loss on the device
        },
    )
    vae = build(config, speed_train.DATA_DIM).to(device)
    vae.release_params()
    svi, _ = SingleProcess(device).svi(vae, config)
    x, steps_per_epoch, orders = speed_train._data(device, batch)

    def step(i: int) -> torch.Tensor:
        epoch, s = divmod(i, steps_per_epoch)
        return train_step(svi, x[orders(epoch)[s * batch : (s + 1) * batch]], 1.0)

    return step


def steps_per_s(step, steps: int, device: torch.device) -> float:
    for i in range(max(3, steps // 4)):
        step(i)
    sync(device)
    began = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return steps / (time.perf_counter() - began)


def speed(device: torch.device, tiny: bool) -> List[Dict]:
    results = []
    for batch in (100, 1000):
        rounds, steps = (1, 3) if tiny else (5, 50)
        result = speed_train.compare(
            device, batch, rounds, steps, warmup=steps, eager=False
        )
        pyro.clear_param_store()
        no_sync = steps_per_s(tensor_stepper(device, batch), steps * rounds, device)
        result["library_no_host_sync"] = {
            "steps_per_s": no_sync,
            "ratio_vs_library": no_sync / result["library"]["steps_per_s"],
        }
        results.append(result)
    return results


def test_images(data_dir: str, n: int, device: torch.device) -> Dict:
    try:
        ds = data.load(
            cfg.load(
                None, {"data.dataset": "binarized-mnist", "data.data_dir": data_dir}
            ).data
        )
        x, source = ds.test[:n], "binarized-mnist test set"
    except Exception:  # no data: synthetic binary images of MNIST's size
        x = (
            torch.rand(n, 784, generator=torch.Generator().manual_seed(1)) < 0.2
        ).float()
        source = "synthetic"
    return {"x": x.to(device), "source": source}


def evaluation(device: torch.device, tiny: bool, data_dir: str) -> Dict:
    n, k = (20, 50) if tiny else (10_000, 5000)
    images = test_images(data_dir, n, device)
    config = cfg.load(
        None,
        {
            "model.latent_dim": speed_train.LATENT,
            "model.hidden": list(speed_train.HIDDEN),
        },
    )
    vae = build(config, 784).to(device).eval()
    importance_sampled(vae, images["x"][:2], k, 0)  # warm-up
    sync(device)
    began = time.perf_counter()
    estimate = importance_sampled(vae, images["x"], k, 0)
    sync(device)
    seconds = time.perf_counter() - began
    return {
        "images": n,
        "num_samples": k,
        "source": images["source"],
        "seconds": seconds,
        "images_per_s": n / seconds,
        "mean_log_marginal_untrained": estimate.log_marginal.mean().item(),
    }


def bf16(device: torch.device, tiny: bool) -> Dict:
    """One fp32-trained digits model; its test ELBO with the same draws in bf16 and fp32."""
    config = cfg.load(
        None, {"train.epochs": 1 if tiny else 20, "train.device": device.type}
    )
    ds = data.load(config.data)
    vae = build(config, ds.data_dim)
    pyro.clear_param_store()
    fit(vae, ds, config)
    x = ds.test.to(device)
    values = {}
    for precision in ("fp32", "bf16"):
        pyro.set_rng_seed(0)
        with autocast(device, precision), torch.no_grad():
            values[precision] = elbo_terms(vae, x)["elbo"].float()
    se = (values["fp32"].std() / values["fp32"].numel() ** 0.5).item()
    diff = (values["bf16"].mean() - values["fp32"].mean()).item()
    return {
        "fp32_elbo": values["fp32"].mean().item(),
        "bf16_elbo": values["bf16"].mean().item(),
        "difference": diff,
        "fp32_stderr": se,
        "within_one_se": abs(diff) < se,
    }


# section: seconds it may take (full sizes; 460 in all, inside gpu_check.sh's 480)
SECTIONS = {
    "speed": 100,
    "evaluation": 120,
    "bf16": 60,
    "gpu_tests": 60,
    "two_processes": 120,
}


# the CPU dry run checks that every section runs, not how fast: on a loaded shared CPU its
# sections may take several times the GPU budget
TINY_SLACK = 5


def run_section(name: str, args: argparse.Namespace, device: torch.device) -> Dict:
    """Section ``name`` in this process (the child ``main`` starts for it)."""
    out = args.json.parent
    if name == "speed":
        return speed(device, args.tiny)  # type: ignore[return-value]
    if name == "evaluation":
        return evaluation(device, args.tiny, args.data_dir)
    if name == "bf16":
        return bf16(device, args.tiny)
    limit = SECTIONS[name] * (TINY_SLACK if args.tiny else 1) - 10
    if name == "gpu_tests":
        return gpu_tests(limit)
    return two_processes(out, device, args.tiny, limit)


def in_child(name: str, args: argparse.Namespace) -> Dict:
    """Section ``name`` in a child process, killed after its ``SECTIONS`` seconds."""
    part = args.json.parent / f"section_{name}.json"
    part.unlink(missing_ok=True)
    words = [sys.executable, str(Path(__file__).resolve()), "--json", str(part)]
    words += ["--section", name, "--data-dir", args.data_dir]
    limit = SECTIONS[name] * (TINY_SLACK if args.tiny else 1)
    result = command(words + (["--tiny"] if args.tiny else []), limit)
    if part.is_file():
        return json.loads(part.read_text())
    if result["rc"] == 124:
        return {"error": f"over its time limit of {limit} s", **result}
    return {"error": f"the section's process failed (exit {result['rc']})", **result}


def environment(installed: str) -> Dict:
    found = {}
    for module in ("pyro", "pyroapi", "opt_einsum", "tomli_w", "numpy", "tqdm"):
        found[module] = importlib.util.find_spec(module) is not None
    for module in ("matplotlib", "sklearn", "PIL", "pytest"):
        found[module] = importlib.util.find_spec(module) is not None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "wheels": installed,
        "imports": found,
    }


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument(
        "--tiny", action="store_true", help="CPU-fallback sizes (seconds)"
    )
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument(
        "--section", choices=list(SECTIONS), help="run one section here"
    )
    parser.add_argument("--installed", default="", help="what gpu_check.sh installed")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.section:  # a child: one section, its JSON or its error
        try:
            result = run_section(args.section, args, device)
        except Exception as err:  # report it: the parent records the section as failed
            result = {"error": f"{type(err).__name__}: {err}"}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        return result
    summary: Dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "tiny": args.tiny,
        "environment": environment(args.installed),
        "seconds": {},
    }
    for name in SECTIONS:
        began = time.perf_counter()
        summary[name] = in_child(name, args)
        summary["seconds"][name] = time.perf_counter() - began
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
