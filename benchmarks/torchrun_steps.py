"""The training step under ``torchrun``: what ``speed_train.py --torchrun N`` launches.

Run as ``python -m torch.distributed.run --nproc_per_node N benchmarks/torchrun_steps.py
--json OUT --batch B``. Every rank interleaves, in rounds (the order alternating), the
library's step as ``fit`` takes it under torchrun (``strategy.start`` then ``runner.svi``:
with N > 1 processes the networks under ``DistributedDataParallel``, gloo on the CPU; with
N = 1 torchrun sets WORLD_SIZE = 1 and ``fit`` runs its one-process step), the same with
``objective.jit = false`` (the eager step), and the plain-PyTorch VAE step of
``speed_train.py`` with the library's fused Adam, under DDP as well when N > 1. Each rank
takes its B / N rows of the global batch B (``--device cuda``: rank r on GPU r, or all on
one GPU; ``backend`` records what the process group runs on). A round is timed in wall time between barriers
(steps/s of the whole group: what scaling means) and in this process's CPU time; rank 0
writes the medians and the per-round ratios to OUT.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import pyro
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_train  # noqa: E402

from pyro_vae import config as config_module  # noqa: E402
from pyro_vae.models.vae import build  # noqa: E402
from pyro_vae.run import distributed, strategy  # noqa: E402
from pyro_vae.run.svi import adam_implementation  # noqa: E402
from pyro_vae.run.train import train_step  # noqa: E402


def library(runner, batch: int, jit: bool) -> Callable[[int], None]:
    """``fit``'s step under this process's strategy (default config, the Burda net)."""
    overrides = {
        "model.latent_dim": speed_train.LATENT,
        "model.hidden": list(speed_train.HIDDEN),
        "train.batch_size": batch,
        "train.device": runner.device.type,
    }
    if not jit:
        overrides["objective.jit"] = False
    config = config_module.load(None, overrides)
    vae = build(config, speed_train.DATA_DIM).to(runner.device)
    vae.release_params()
    svi, _ = runner.svi(vae, config)
    data, steps_per_epoch, orders = speed_train._data(runner.device, batch)

    def step(i: int) -> None:
        epoch, s = divmod(i, steps_per_epoch)
        rows = data[orders(epoch)[s * batch : (s + 1) * batch]]
        loss = float(train_step(svi, runner.shard(rows), 1.0))
        if loss != loss:
            raise RuntimeError("library loss became NaN")

    step.vae = vae  # type: ignore[attr-defined]
    return step


class _Loss(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x)


def plain(vae, runner, batch: int) -> Callable[[int], None]:
    """The plain VAE step with the library's Adam; its networks under DDP when N > 1."""
    model = speed_train.TorchVAE(vae).to(runner.device)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, **adam_implementation(params))
    module: nn.Module = _Loss(model)
    if runner.world_size > 1:
        cuda = runner.device.type == "cuda"
        ids = [runner.device.index] if cuda else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    data, steps_per_epoch, orders = speed_train._data(runner.device, batch)

    def step(i: int) -> None:
        epoch, s = divmod(i, steps_per_epoch)
        loss = module(runner.shard(data[orders(epoch)[s * batch : (s + 1) * batch]]))
        optimizer.zero_grad()
        (loss * runner.world_size).backward()
        optimizer.step()
        if not loss.item() == loss.item():
            raise RuntimeError("plain loss became NaN")

    return step


def launch(
    nproc: int, batch: int, rounds: int, steps: int, timeout: float = 1800
) -> Dict:
    """Run this script under ``torchrun --nproc_per_node nproc`` on the CPU (gloo) and return
    rank 0's figures (what ``speed_train.py --torchrun`` reports)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "steps.json"
        words = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node"]
        words += [str(nproc), "--master_port", str(_free_port()), __file__]
        words += ["--json", str(out), "--batch", str(batch)]
        words += ["--rounds", str(rounds), "--steps", str(steps)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            words, capture_output=True, text=True, timeout=timeout, env=env
        )
        if done.returncode or not out.is_file():
            raise RuntimeError(
                f"torchrun failed: {(done.stdout + done.stderr)[-2000:]}"
            )
        return json.loads(out.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runner = strategy.start(torch.device(args.device))
    pyro.set_rng_seed(distributed.rank_seed(0, runner.rank))
    lib = library(runner, args.batch, jit=True)
    impls: Dict[str, Callable[[int], None]] = {
        "library": lib,
        "library_eager": library(runner, args.batch, jit=False),
        "torch_same_adam": plain(lib.vae, runner, args.batch),
    }
    counters = {name: 0 for name in impls}
    wall: Dict[str, List[float]] = {name: [] for name in impls}
    cpu: Dict[str, List[float]] = {name: [] for name in impls}

    def run(name: str, count: int) -> None:
        for _ in range(count):
            impls[name](counters[name])
            counters[name] += 1

    for name in impls:
        run(name, max(5, args.steps // 2))  # warm-up: compiling, DDP's buckets
    names = list(impls)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(runner.device)
            runner.barrier()
            began, began_cpu = time.perf_counter(), time.process_time()
            run(name, args.steps)
            sync(runner.device)
            runner.barrier()
            wall[name].append(args.steps / (time.perf_counter() - began))
            cpu[name].append(args.steps / (time.process_time() - began_cpu))
    if runner.is_main:
        out = {
            "world_size": runner.world_size,
            "device": str(runner.device),
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "global_batch": args.batch,
            "rounds": args.rounds,
            "steps_per_round": args.steps,
        }
        for name in impls:
            ratios = [a / b for a, b in zip(wall[name], wall["torch_same_adam"])]
            cpu_ratios = [a / b for a, b in zip(cpu[name], cpu["torch_same_adam"])]
            out[name] = {
                "steps_per_s_wall": statistics.median(wall[name]),
                "steps_per_s_cpu": statistics.median(cpu[name]),
                "ratio_vs_torch_same_optimizer": statistics.median(ratios),
                "ratio_vs_torch_same_optimizer_cpu": statistics.median(cpu_ratios),
                "round_ratios": ratios,
            }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    distributed.teardown()


if __name__ == "__main__":
    main()
