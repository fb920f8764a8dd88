"""Process set-up: the device, random streams, and the C heap's treatment of large temporaries.

``resolve_device`` turns the ``device`` setting into a torch device (``auto``: CUDA when there
is a GPU).

glibc's ``malloc`` serves blocks above an adaptive threshold (128 KB at first) with fresh
mappings, and returns the free top of its heap to the OS once it exceeds twice that threshold;
freeing a mapped block raises the threshold to that block's size, up to 32 MB
(DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems). Until a process has freed a block of about
that size, each importance-sampling chunk's 4 to 16 MB temporaries go back to the OS when the
chunk ends and are faulted in again by the next one. ``prepare_heap`` raises the threshold
once per process, as freeing any large tensor would (loading a data set usually has done so
already): it allocates and frees one block just under 32 MB, never touched, so never
resident. glibc stays adaptive; with other allocators it is a harmless allocation.

``pyro-vae evaluate`` (``evaluate.evaluate``) calls it before evaluating on the CPU.

``forked_rng`` is the process's other piece of set-up: a block whose draws leave torch's random
streams (the CPU's and those of the CUDA devices in use) as they were.
"""

import os
import sys
from typing import Iterable, List, Union

import torch

from pyro_vae.errors import ConfigError

# glibc's largest adaptive mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
ADAPTIVE_THRESHOLD_MAX = 32 * 2**20
_heap_prepared = False


def prepare_heap() -> None:
    """Let glibc's heap keep chunk-sized temporaries for reuse (once per process)."""
    global _heap_prepared
    if not _heap_prepared:
        torch.empty(ADAPTIVE_THRESHOLD_MAX - 2**16, dtype=torch.uint8)  # freed at once
        _heap_prepared = True


def cuda_devices(values: Iterable[Union[torch.Tensor, torch.device]]) -> List[int]:
    """The indices of the CUDA devices that ``values`` (tensors or devices) live on."""
    devices = (v.device if torch.is_tensor(v) else v for v in values)
    return sorted(
        {
            d.index or 0
            for d in devices
            if isinstance(d, torch.device) and d.type == "cuda"
        }
    )


def forked_rng(*values: Union[torch.Tensor, torch.device]):
    """``torch.random.fork_rng`` over the CPU and the CUDA devices of ``values``: draws made
    inside leave every random stream they touch as it was."""
    return torch.random.fork_rng(devices=cuda_devices(values))


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; asking for CUDA without one fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{name}' was asked for but no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}); use --device cpu, or --device auto to take a GPU "
            f"only when there is one"
        )
    return torch.device(name)


def end_now(status: int) -> None:
    """End this process with ``status`` at once: flush stdout and stderr, then ``os._exit``,
    skipping the interpreter's teardown and C++ static destructors.

    ``pyro-vae`` ends a torchrun worker this way once its command is done and it has left the
    process group. ``destroy_process_group`` does not stop gloo's threads: a
    ``DistributedDataParallel`` keeps references to the process group after it is deleted
    (measured: 10 extra references and its three threads, ``gloo_tcp_loop`` and two
    ``pt_gloo_runloop``, still running after ``destroy_process_group`` and ``gc.collect()``).
    They then run into the interpreter's shutdown, where the order of their destruction is
    not defined; a worker that finished first (rank 1, while rank 0 writes figures) aborted
    there now and then with "terminate called without an active exception" (SIGABRT), and
    torchrun then stopped the other rank. Nothing remains to be written when this is called.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(status)
