"""Memory estimates of the estimators' own sizes, checked before anything is allocated.

AIS (``ais``) holds its schedule (T + 1 float64 inverse temperatures) and runs chains in
batches of at least ``num_chains`` (chain, data point) pairs, each pair a pass through the
model and its gradient: at least the decoder's output (``params_per_dim`` x D numbers), the
data row and the linear layers' outputs of encoder and decoder, twice (values and gradients).
BDMC first simulates ``bdmc_points`` rows from the model in one pass. Each estimate meets
:func:`pyro_vae.config.require_memory`: at most half of the machine's memory.
"""

from typing import Dict, Optional

from torch import nn

from pyro_vae.config import require_memory

FLOAT, DOUBLE = 4, 8
AIS_DEFAULTS = {
    "num_steps": 500,
    "num_chains": 16,
    "bdmc_points": 0,
}  # ais_evaluation's


def ais_sizes(options: Dict) -> Dict[str, int]:
    """The sizes among ``ais_evaluation``'s keyword ``options``, defaults filled in."""
    return {key: options.get(key, default) for key, default in AIS_DEFAULTS.items()}


def values_per_row(vae: nn.Module, data_dim: Optional[int] = None) -> int:
    """A lower bound on the numbers one data point's pass through ``vae`` and its gradient
    keep: the decoder's output and the data row (``data_dim`` values; by default the one-layer
    VAE's ``arch.data_dim``), and every linear layer's output."""
    data_dim = vae.arch.data_dim if data_dim is None else data_dim
    per_dim = getattr(getattr(vae, "likelihood", None), "params_per_dim", 1)
    linear = sum(m.out_features for m in vae.modules() if isinstance(m, nn.Linear))
    return 2 * (data_dim * (per_dim + 1) + linear)


def check_ais_memory(
    vae: nn.Module,
    num_steps: int,
    num_chains: int,
    bdmc_points: int,
    data_dim: Optional[int] = None,
) -> None:
    """Refuse AIS settings whose tensors cannot fit (a ``ConfigError`` naming the flag)."""
    fix = "use a smaller value"
    require_memory(
        DOUBLE * (num_steps + 1),
        f"--ais-steps {num_steps} means a schedule of {num_steps + 1} inverse "
        f"temperatures",
        fix,
    )
    row = values_per_row(vae, data_dim)
    require_memory(
        FLOAT * num_chains * row,
        f"--ais-chains {num_chains} means at least {num_chains} chains of {row} numbers "
        f"each in one batch",
        fix,
    )
    require_memory(
        FLOAT * bdmc_points * row,
        f"--bdmc {bdmc_points} means {bdmc_points} simulated points of {row} numbers each "
        f"in one pass",
        fix,
    )
