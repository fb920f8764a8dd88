"""One chunk of importance weights, log w for K particles of a few rows, eager or compiled,
and the compiled chunks a model keeps between calls.

Traced and replayed Pyro programs cost a fixed ~0.5 ms of Python per chunk on the CPU
(handler messages for every parameter of ``pyro.module``, plates, trace nodes, distribution
objects) whatever the chunk's size: 4-5% of a 5,000-pair MNIST chunk. Compiled with
``torch.jit.trace``, a chunk is one TorchScript graph instead; compiling costs a few tens of
chunks' time. ``ChunkWeights`` compiles a chunk shape always, never, or (``compile=None``)
once it has evaluated that shape as many times as compiling takes to repay
(``worth_compiling``); ``shared_chunk_weights`` keeps one such instance per model and guide,
so that calls of ``log_marginal_likelihood`` on the same VAE count together and reuse what
was compiled (a user calling it once per batch of images pays the compilation once).
"""

import weakref
from typing import Any, Callable, Dict, Optional, Tuple

import pyro.ops.jit
import torch

from pyro_vae.infer.jit_elbo import call_with_store_params, compiled_graph, compiling
from pyro_vae.infer.traces import log_weights

# When compiling pays (CPU, 784-200-200-50 net, one thread; `python benchmarks/speed_eval.py
# --chunk-costs --threads 1`): a compiled chunk saves 0.7-2.7 ms (the Python of tracing and
# replaying the programs, and their bookkeeping ops) and compiling costs 25-200 ms, growing with
# the chunk: repaid after 48 chunks of 1 pair, 25-37 of 100-1,000 pairs, 47-59 of 2,500 and 74
# of 5,000. Rule: 48 chunks plus one per 200 pairs of a chunk.
MIN_CHUNKS_TO_COMPILE = 48
PAIRS_PER_EXTRA_CHUNK = 200


def worth_compiling(chunks: int, chunk_pairs: int, dtype: torch.dtype) -> bool:
    """Whether ``chunks`` chunks of ``chunk_pairs`` (particle, row) pairs each repay their
    compilation (see above). Never for float64 data: a trace turns shape arithmetic into
    float32 scalars (d log(2 pi) in ``MultivariateNormal``'s density), an error of 1e-8
    relative, below float32's rounding but not float64's."""
    needed = MIN_CHUNKS_TO_COMPILE + chunk_pairs // PAIRS_PER_EXTRA_CHUNK
    return chunks >= needed and dtype != torch.float64


class ChunkWeights:
    """``log_weights`` of one chunk, optionally compiled once per chunk shape.

    ``compile``: True compiles every chunk shape on first use, False never, None (automatic)
    compiles a shape once this instance has evaluated it ``worth_compiling`` times (float64
    never). Compiled with Pyro's ``pyro.ops.jit.trace`` (which passes the parameters in by
    name); the programs' structure must not depend on the data (every registered part
    qualifies). Compiling runs the programs three more times; those draws come from a forked
    random stream, so the draws that count are the eager ones, in count and value. A program
    that TorchScript cannot trace is evaluated eagerly unless compiling was required
    (``required=True``). One instance can serve several calls of ``log_marginal_likelihood``
    on the same model and guide (``chunk_weights``), as long as no module changes in between
    except for its parameters' values.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        plate: str = "data",
        compile: Optional[bool] = True,
        required: bool = False,
    ):
        self.model, self.guide, self.plate = model, guide, plate
        self.compile, self.required = compile, required
        self.compiled: Dict[Tuple, Callable] = {}
        self.seen: Dict[Tuple, int] = {}  # eager chunks per shape (compile=None)

    def __call__(self, k: int, xb: torch.Tensor) -> torch.Tensor:
        if self.compile is False:
            return log_weights(self.model, self.guide, k, xb, plate=self.plate)
        key = (k, tuple(xb.shape), xb.dtype, xb.device)
        with torch.jit.optimized_execution(False):  # autograd-free; no profiling passes
            fn = self.compiled.get(key)
            if fn is None:
                if self.compile is None:
                    seen = self.seen[key] = self.seen.get(key, 0) + 1
                    if not worth_compiling(seen, k * xb.shape[0], xb.dtype):
                        return log_weights(
                            self.model, self.guide, k, xb, plate=self.plate
                        )
                try:
                    fn = self._compile(k, xb)
                except Exception:
                    if self.required:
                        raise
                    self.compile = False  # an eager run raises any real error again
                    return self(k, xb)
                self.compiled[key] = fn
            return fn(xb)

    def _compile(self, k: int, xb: torch.Tensor) -> Callable:
        model, guide, plate = self.model, self.guide, self.plate
        fn = pyro.ops.jit.trace(
            lambda x: log_weights(model, guide, k, x, plate=plate),
            ignore_warnings=True,
        )
        with compiling(xb):
            fn(xb)
        return CompiledChunk(fn, xb)


class CompiledChunk:
    """A chunk's TorchScript graph (from ``pyro.ops.jit.trace``, specialized to the chunk's
    shape by ``jit_elbo.compiled_graph``), called with the parameter store's current tensors
    (``jit_elbo.call_with_store_params``). Pyro's own call looks each parameter up through
    ``pyro.param`` (constraint transforms, handler messages): ~0.3 ms per chunk, 3% of a
    1,000-pair MNIST chunk. The graph's inputs are the parameters named in ``names``, in that
    order, then x."""

    def __init__(self, fn: "pyro.ops.jit.CompiledFunction", x: torch.Tensor):
        self.graph, names = compiled_graph(fn, (x,), {})
        self.names = list(names)
        self.fn = fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        result = call_with_store_params(self.graph, self.names, (x,))
        return (
            self.fn(x) if result is None else result
        )  # Pyro's path names what is missing


# per model owner (a VAE, or the model function itself): its automatic ChunkWeights by programs
_SHARED: "weakref.WeakKeyDictionary[Any, Dict[Tuple, ChunkWeights]]" = (
    weakref.WeakKeyDictionary()
)


def shared_chunk_weights(
    model: Callable, guide: Callable, plate: str = "data"
) -> ChunkWeights:
    """The automatic (``compile=None``) ``ChunkWeights`` of ``model`` and ``guide``, kept
    while the object behind ``model`` (a bound method's module, else the function) lives.

    Its key holds the programs' functions and every submodule of the modules behind them with
    its train/eval mode, so a VAE whose networks are replaced, or switched between train and
    eval mode, gets a new instance rather than a graph traced from the old structure.
    """
    owner = getattr(model, "__self__", model)
    try:
        by_programs = _SHARED.setdefault(owner, {})
    except TypeError:  # not weakly referable: nothing to share
        return ChunkWeights(model, guide, plate, compile=None)
    key = (_program_key(model), _program_key(guide), plate)
    weights = by_programs.get(key)
    if weights is None:
        weights = by_programs[key] = ChunkWeights(model, guide, plate, compile=None)
    return weights


def _program_key(program: Callable) -> Tuple:
    owner = getattr(program, "__self__", None)
    function = getattr(program, "__func__", program)
    modules = (
        tuple((id(m), m.training) for m in owner.modules())
        if isinstance(owner, torch.nn.Module)
        else ()
    )
    return id(owner), id(function), modules
