"""Process set-up for long evaluations: the C heap's treatment of large temporaries.

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
"""

import torch

# glibc's largest adaptive mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
ADAPTIVE_THRESHOLD_MAX = 32 * 2**20
_heap_prepared = False


def prepare_heap() -> None:
    """Let glibc's heap keep chunk-sized temporaries for reuse (once per process)."""
    global _heap_prepared
    if not _heap_prepared:
        torch.empty(ADAPTIVE_THRESHOLD_MAX - 2**16, dtype=torch.uint8)  # freed at once
        _heap_prepared = True
