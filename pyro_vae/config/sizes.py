"""Memory estimates: every size a user can set is checked against this machine's memory
before anything of that size is allocated.

:func:`check_size` estimates what training a config's model costs: its parameters (the
network, ``model.hidden``/``latent_dim`` or ``network.channels``/``features``/``kernel``; the
guide's and the prior's flows, pseudo-inputs and components), each held four times as
float32 (weights, gradients, Adam's two moments), plus one step's activations (each layer's
output for ``train.batch_size`` x ``objective.num_particles`` rows, kept for the backward pass
and matched by its gradient). :func:`require_memory` is the one rule every estimate meets
(data files, image folders, AIS chains and steps use it too): at most half of the machine's
physical memory. Parts registered from user code have unknown sizes and count nothing.
"""

import math
import os
from typing import List, Sequence, Tuple, Type, Union

from pyro_vae.config.sections import Config
from pyro_vae.errors import ConfigError

FLOAT = 4  # bytes of a float32
TRAINING_COPIES = 4  # weights, gradients, Adam's two moments
DEFAULT_FLOW_HIDDEN = 128  # guides.py / priors.py: max(128, 2 * latent_dim) when unset


def memory_bytes() -> int:
    """This machine's physical memory in bytes (2**40 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40


def human(size: float) -> str:
    """A byte count for a message: ``203 GiB``, ``1.5 MiB``, ``800 bytes``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} bytes"


def require_memory(
    need: float, what: str, fix: str, error: Type[Exception] = ConfigError
) -> None:
    """Refuse (``error``) when ``need`` bytes exceed half of this machine's memory; the
    message is ``{what}, about {need}, more than half of ...; {fix}``."""
    have = memory_bytes()
    if need > have // 2:
        raise error(
            f"{what}, about {human(need)}, more than half of this machine's "
            f"{human(have)} of memory; {fix}"
        )


def _dense(widths: Sequence[int]) -> int:
    """Weights and biases of a chain of linear layers."""
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def _whole(value, default: int) -> int:
    """``value`` when it is a whole number >= 0, else ``default`` (the part's own checks
    refuse a bad option with its own message; the estimate only needs a size)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else default


def _widths(value, default: List[int]) -> List[int]:
    ok = isinstance(value, (list, tuple)) and len(value) > 0
    return [_whole(v, 1) for v in value] if ok else default


# one sized component of a model: (the settings that size it, parameters, activations a row)
Part = Tuple[str, int, int]


def _network(config: Config, shape: Tuple[int, ...], per_dim: int) -> Tuple[Part, int]:
    """The encoder and decoder (the built-in ``mlp`` and ``conv``), and their feature width."""
    m, d = config.model, math.prod(shape)
    if config.network.name == "conv" and len(shape) == 3:
        opts = config.network.options
        channels = _widths(opts.get("channels"), [32, 64])
        kernel = _whole(opts.get("kernel"), 4)
        features = _whole(opts.get("features"), 256)
        (c, h, w), pad = shape, (kernel - 1) // 2
        params = acts = 0
        for width in channels:  # each convolution and its transpose
            h, w = max((h + 2 * pad - kernel) // 2 + 1, 1), max(
                (w + 2 * pad - kernel) // 2 + 1, 1
            )
            params += 2 * (c * width * kernel * kernel + width)
            acts += 2 * width * h * w
            c = width
        params += _dense([c * h * w, features, 2 * m.latent_dim])
        params += _dense([m.latent_dim, features, c * h * w])
        what = f"network.channels={channels} with network.features={features}"
        return (what, params, acts + 2 * features + 4 * m.latent_dim), features
    if config.network.name != "mlp":
        return (f"network '{config.network.name}'", 0, 0), 0
    enc = [d, *m.hidden, 2 * m.latent_dim]
    dec = [m.latent_dim, *reversed(m.hidden), per_dim * d]
    what = f"model.hidden={list(m.hidden)} with model.latent_dim={m.latent_dim}"
    features = m.hidden[-1] if m.hidden else d
    acts = 2 * sum(m.hidden) + 4 * m.latent_dim
    return (what, _dense(enc) + _dense(dec), acts), features


def _flows(section: str, options, default: int, latent: int, context: int) -> Part:
    """``num_flows`` autoregressive (or planar) networks (latent + context) -> hidden ->
    2 latent + 1."""
    num = _whole(options.get("num_flows"), default)
    hidden = _widths(options.get("flow_hidden"), [max(DEFAULT_FLOW_HIDDEN, 2 * latent)])
    per_flow = _dense([latent + context, *hidden, 2 * latent + 1])
    what = f"{section}.num_flows={num} with {section}.flow_hidden={hidden}"
    return what, num * per_flow, num * sum(hidden)


def _parts(config: Config, features: int) -> List[Part]:
    """The guide's and the prior's own sizes: flows, a full-rank Cholesky head, mixture
    components, VampPrior pseudo-inputs (each runs through the encoder every step)."""
    latent, out = config.model.latent_dim, []
    guide, prior = config.guide, config.prior
    if guide.name in ("iaf", "planar"):
        default = 4 if guide.name == "planar" else 2
        out.append(_flows("guide", guide.options, default, latent, features))
    if guide.name == "full_rank":
        out.append(("guide 'full_rank'", (features + 1) * latent * latent, latent**2))
    if prior.name == "flow":
        out.append(_flows("prior", prior.options, 2, latent, 0))
    if prior.name == "mixture":
        k = _whole(prior.options.get("num_components"), 10)
        out.append((f"prior.num_components={k}", k * (2 * latent + 1), 0))
    return out


def check_size(config: Config, data_shape: Union[int, Sequence[int]]) -> None:
    """Refuse a model too large for this machine's memory before allocating it.

    ``data_shape`` is one example's shape ((C, H, W) or (D,)) or its flat size. Parameters:
    sum (n_in + 1) n_out over the linear layers, 2 (c_in c_out k^2 + c_out) over a
    convolution and its transpose, four float32 copies each for training. Activations: every
    layer's output for batch_size x num_particles rows (and the VampPrior's pseudo-inputs),
    twice (the values the backward pass keeps, and their gradients). The message names the
    setting behind the largest share."""
    shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(data_shape)
    d, t = math.prod(shape), config.train
    per_dim = {"gaussian": 2, "discretized_logistic": 3}.get(config.likelihood.name, 1)
    network, features = _network(config, shape, per_dim)
    parts = [network, *_parts(config, features)]
    particles = _whole(config.objective.options.get("num_particles"), 1)
    rows = t.batch_size * particles
    row = sum(a for _, _, a in parts) + d * (per_dim + 1)
    shares = [(what, TRAINING_COPIES * p + 2 * rows * a) for what, p, a in parts]
    batch = f"train.batch_size={t.batch_size} with objective.num_particles={particles}"
    shares.append((batch, 2 * rows * d * (per_dim + 1)))
    params, activations = sum(p for _, p, _ in parts), rows * row
    if config.prior.name == "vamp":
        pseudo = _whole(config.prior.options.get("num_pseudo"), 500)
        params, activations = params + pseudo * d, activations + pseudo * network[2]
        shares.append((f"prior.num_pseudo={pseudo}", TRAINING_COPIES * pseudo * d))
    what = max(shares, key=lambda share: share[1])[0]
    described = "x".join(map(str, shape)) if len(shape) > 1 else f"{d}-value"
    require_memory(
        FLOAT * (TRAINING_COPIES * params + 2 * activations),
        f"{what} on {described} data means {params:.3g} parameters and "
        f"{activations:.3g} activations a step",
        "use smaller sizes",
    )
