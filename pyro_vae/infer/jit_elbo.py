"""TorchScript-compiled ``Trace_ELBO`` and ``TraceMeanField_ELBO`` (the ``trace`` and ``meanfield``
objectives' default, ``jit=True``; objectives.py registers them).

``jit=True`` compiles the ELBO with ``torch.jit.trace`` through Pyro's ``JitTrace*_ELBO``: the
model's structure must be static (every registered prior and guide is), and one compiled function is kept
per signature of the arguments (tensor shapes, dtypes and devices), so a new batch size gets its
own trace instead of silently reusing a wrong one. Positional arguments must be tensors
(``torch.jit.trace`` refuses others): ``fit`` passes ``kl_weight`` as a 0-d tensor. Compiling
draws no extra random numbers: a run is repeatable with or without JIT (the draws of a traced and
an eager step agree in count, not necessarily in value).

Per step, where no Pyro handler is active (``run.svi.ModuleSVI`` after its first step), the
compiled graph is called directly with the parameters' tensors (``_DirectCalls``), in a copy
specialized to its one argument signature (``specialized``): a trace records shape arithmetic,
Pyro's plate and scale bookkeeping and ``Trace_ELBO``'s twin loss and surrogate sums as
operations run on every call, and TorchScript's own passes fold or merge them.
"""

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import pyro
import pyro.infer
import torch
from pyro.infer import ELBO
from pyro.ops.jit import _hashable_args_kwargs
from pyro.poutine.runtime import _PYRO_STACK

from pyro_vae.process import forked_rng


def signature(args: tuple) -> Tuple:
    """What a traced ELBO is specialised to: each tensor argument's shape, dtype and device, and
    each other argument's value (``torch.jit.trace`` bakes them all in)."""
    return tuple(_describe(a) for a in args)


def _describe(arg: Any) -> Tuple:
    if torch.is_tensor(arg):
        return tuple(arg.shape), arg.dtype, arg.device
    try:
        hash(arg)
    except TypeError:
        return type(arg), id(arg)
    return type(arg), arg


@contextmanager
def compiling(*values: Any) -> Iterator[None]:
    """A block that runs a program once to compile it with ``torch.jit.trace``: its draws leave
    the random streams of the CPU and of the CUDA devices of ``values`` as they were, and
    torch's deprecation warning for ``torch.jit.trace`` (torch >= 2.10) is silenced."""
    with forked_rng(*values), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", ".*torch.jit.trace.* is deprecated", DeprecationWarning
        )
        yield


def compiled_once(elbo: ELBO, attr: str, args: tuple, call: Callable[[], Any]) -> Any:
    """Run ``call`` (a Pyro JIT ELBO method that compiles into ``elbo.<attr>`` when it is None)
    with the compiled function kept for ``signature(args)``.

    Pyro's ``CompiledFunction`` runs the program twice more on its first call (parameter capture
    and tracing), so compiling would shift the random stream; here the first call's result is
    dropped and the step is re-run compiled from the same RNG state. torch >= 2.10 flags
    ``torch.jit.trace`` as deprecated; that warning is silenced here (set ``jit = false`` if a
    future torch drops it).

    The compiled graph runs under ``torch.jit.optimized_execution(False)``: TorchScript then
    executes the traced ops without wrapping them in its own differentiable subgraphs, so the
    backward pass is autograd's native one (fused kernels such as ``tanh_backward`` and
    ``AddmmBackward``) rather than TorchScript's symbolic gradient formulas, which spend more
    small ops per step. The Python-free forward pass, the point of compiling, is kept.
    """
    cache: Dict[Tuple, Any] = elbo.__dict__.setdefault("compiled_by_signature", {})
    key = signature(args)
    compiled = cache.get(key)
    setattr(elbo, attr, compiled)
    with torch.jit.optimized_execution(False):
        if compiled is not None:
            return call()
        with compiling(*args):
            call()
        cache[key] = getattr(elbo, attr)
        return call()


def compiled_graph(compiled_function: Any, args: tuple, kwargs: Dict) -> Any:
    """The traced graph that Pyro's ``CompiledFunction`` keeps for these arguments, specialized
    to their signature (``specialized``), and its parameter names, as ``(graph, names)``, or
    None. Call the graph only with arguments of that signature."""
    graph = compiled_function.compiled.get(_hashable_args_kwargs(args, kwargs))
    if graph is None:
        return None
    return specialized(graph), tuple(compiled_function._param_names)


def specialized(traced: Any) -> Any:
    """A copy of the traced function ``traced`` for the shapes, dtypes and devices it was
    traced with, or ``traced`` itself where TorchScript's passes are not available.

    A trace keeps every ``x.shape[0]`` as a run-time ``aten::size`` and its conversions, so
    the arithmetic on shapes (Pyro's plate scale ``scale * size / subsample_size``, the
    ``arange`` of a full plate's indices, every ``expand`` target) runs on each call, and
    ``Trace_ELBO`` sums the same terms twice (its loss and its surrogate loss). With the
    argument shapes fixed (the callers keep one trace per argument signature), TorchScript's
    peephole pass replaces the sizes by constants, constant propagation folds what then
    depends on constants alone, and common-subexpression elimination merges the twin sums:
    about 40% fewer operations in a batch-10 training step's graph, the same results bit for
    bit (tests compare losses, gradients and the random stream after a call with the
    unspecialized graph). The passes neither fold nor merge nondeterministic operations, so
    every draw stays (two identical ``randn`` calls stay two).
    """
    try:
        graph = traced.graph.copy()
        torch._C._jit_pass_inline(graph)
        torch._C._jit_pass_peephole(graph, False)  # False: shape peepholes on
        torch._C._jit_pass_constant_propagation(graph)
        torch._C._jit_pass_cse(graph)
        torch._C._jit_pass_dce(graph)
        torch._C._jit_pass_constant_pooling(graph)
        return torch._C._create_function_from_graph("specialized", graph)
    except (AttributeError, RuntimeError, TypeError):  # a torch without these passes
        return traced


def call_with_store_params(graph: Any, names: Sequence[str], args: tuple) -> Any:
    """A traced graph whose inputs are the parameters ``names`` then ``args``, called with the
    param store's current (unconstrained) tensors: what Pyro's ``CompiledFunction`` passes,
    without its ``pyro.param`` lookups. None when a parameter left the store."""
    store = pyro.get_param_store()._params  # name -> unconstrained tensor
    try:
        params = [store[name] for name in names]
    except KeyError:
        return None
    with torch.jit.optimized_execution(False):
        return graph(*params, *args)


class _DirectCalls:
    """Calls of a compiled ELBO without Pyro's per-call plumbing, where that plumbing does
    nothing.

    Pyro's ``CompiledFunction`` looks every parameter up with ``pyro.param`` (one message
    through the handler stack each) inside ``poutine.block`` and a param-capture trace, then
    calls the traced graph with the parameters' unconstrained tensors. When no handler is
    active (``ModuleSVI`` steps without its param-capture trace), none of those messages
    reaches anyone: the graph is called here with the same tensors, read from the param store
    by name, so the result is the same, bit for bit. Entries are per argument signature,
    model and guide; a missing parameter (the store was cleared) falls back to Pyro's path.
    """

    def __init__(self) -> None:
        self.entries: Dict[Tuple, Tuple[Any, Tuple[str, ...]]] = {}

    @staticmethod
    def key(model, guide, args: tuple, kwargs: Dict) -> Optional[Tuple]:
        if kwargs or _PYRO_STACK:
            return None
        return signature(args), id(model), id(guide)

    def call(self, key: Optional[Tuple], args: tuple) -> Any:
        entry = None if key is None else self.entries.get(key)
        if entry is None:
            return None
        result = call_with_store_params(*entry, args)
        if result is None:
            del self.entries[key]
        return result

    def remember(self, key: Optional[Tuple], compiled_function: Any, args, kwargs):
        if key is not None and compiled_function is not None:
            entry = compiled_graph(compiled_function, args, kwargs)
            if entry is not None:
                self.entries[key] = entry


class JitTrace_ELBO(pyro.infer.JitTrace_ELBO):
    """Pyro's ``JitTrace_ELBO``, compiled once per argument signature (see ``compiled_once``),
    called directly where Pyro's plumbing would do nothing (see ``_DirectCalls``)."""

    def loss_and_surrogate_loss(self, model, guide, *args, **kwargs):
        parent = super().loss_and_surrogate_loss
        return _compiled_call(
            self,
            "_loss_and_surrogate_loss",
            (model, guide, args, kwargs),
            lambda: parent(model, guide, *args, **kwargs),
        )

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The loss's value with the surrogate loss's gradient. Pyro 1.9.2 returns ``loss +
        (surrogate - surrogate.detach())``, but its compiled ``loss`` is not detached: for
        reparameterized sites both carry the ELBO's gradient, which came out doubled (what
        ``TensorSVI`` under DDP or with ``train.check_every > 1`` differentiates)."""
        loss, surrogate = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate - surrogate.detach())


class JitTraceMeanField_ELBO(pyro.infer.JitTraceMeanField_ELBO):
    """Pyro 1.9.2's ``JitTraceMeanField_ELBO`` stores its compiled loss as
    ``_differentiable_loss`` but looks for ``_loss_and_surrogate_loss``, so it re-traces the
    model on every step. This subclass reuses the compiled function it stored, one per argument
    signature (see ``compiled_once``), and calls it directly where Pyro's plumbing would do
    nothing (see ``_DirectCalls``)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        def call():
            compiled = getattr(self, "_differentiable_loss", None)
            if compiled is None:
                return super(JitTraceMeanField_ELBO, self).differentiable_loss(
                    model, guide, *args, **kwargs
                )
            return compiled(*args, **_model_ids(model, guide), **kwargs)

        return _compiled_call(
            self, "_differentiable_loss", (model, guide, args, kwargs), call
        )


def _compiled_call(elbo: ELBO, attr: str, programs: tuple, call: Callable[[], Any]):
    """The graph called directly where no handler listens (``_DirectCalls``), else ``call``
    through ``compiled_once``, remembering the graph it compiled. ``programs`` is
    ``(model, guide, args, kwargs)``."""
    model, guide, args, kwargs = programs
    direct = elbo.__dict__.setdefault("direct_calls", _DirectCalls())
    key = direct.key(model, guide, args, kwargs)
    result = direct.call(key, args)
    if result is None:
        result = compiled_once(elbo, attr, args, call)
        direct.remember(key, getattr(elbo, attr), args, _model_ids(model, guide))
    return result


def _model_ids(model, guide) -> Dict[str, int]:
    """The keyword arguments Pyro's JIT ELBOs add to tell programs apart."""
    return {"_pyro_model_id": id(model), "_pyro_guide_id": id(guide)}
