"""Encoder trunks and decoders, registered by name in ``NETWORKS`` (plain ``torch.nn``).

Rows of data stay flat everywhere else (plates, likelihoods, the VampPrior's pseudo-inputs):
a network takes rows of length ``D = prod(arch.shape)`` and reshapes inside if it needs images.

A network part is a factory ``factory(arch, **options) -> Network``; the ``Network`` makes

- ``encoder()``: x ``(..., D)`` -> features ``(..., feature_dim)`` (the guide's trunk), and
- ``decoder(params_per_dim)``: z ``(..., latent_dim)`` -> ``(..., params_per_dim * D)``, laid
  out parameter-major: ``out.reshape(..., params_per_dim, D)[..., j, :]`` is the j-th number
  of every pixel (likelihoods with one number per pixel take ``params_per_dim = 1``).

A user's own network is one registered factory (see README, "Your own network")::

    @NETWORKS.register("mine")
    def mine(arch, width: int = 64) -> Network: ...
"""

import functools
import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.registry import NETWORKS

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def mlp(
    in_dim: int, widths: Sequence[int], out_dim: Optional[int], activation: str
) -> nn.Sequential:
    """``in_dim -> widths[0] -> ... -> widths[-1] (-> out_dim)``, the activation after every
    hidden layer and none after the output layer. With ``out_dim=None`` the net ends in the last
    hidden layer's activations (a feature trunk); with no widths it is linear (or the identity).
    """
    layers = []
    for width in widths:
        layers += [nn.Linear(in_dim, width), ACTIVATIONS[activation]()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Network:
    """What a network factory returns: ``feature_dim`` and the two builders (see module doc)."""

    feature_dim: int

    def encoder(self) -> nn.Module:
        raise NotImplementedError

    def decoder(self, params_per_dim: int = 1) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class Architecture:
    """The sizes every part is built from: the data (``data_dim`` numbers per row, one example's
    ``shape`` before flattening: (C, H, W) for images, (D,) for flat data), the latent dimension,
    the MLP hidden widths and activation (``[model]``), and the network part by name with its
    options (``[network]``)."""

    data_dim: int
    latent_dim: int
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    shape: Optional[Tuple[int, ...]] = None
    network: str = "mlp"
    network_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (self.data_dim,) if self.shape is None else tuple(self.shape)
        if math.prod(shape) != self.data_dim:
            raise ConfigError(
                f"data shape {shape} holds {math.prod(shape)} numbers per example, not "
                f"data_dim = {self.data_dim}"
            )
        object.__setattr__(self, "shape", shape)

    @classmethod
    def for_data(
        cls, data_shape: Union[int, Sequence[int]], latent_dim: int, **kwargs: Any
    ) -> "Architecture":
        """From one example's shape ((C, H, W) or (D,)), or a flat size ``D``."""
        shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(data_shape)
        return cls(math.prod(shape), latent_dim, shape=shape, **kwargs)

    @functools.cached_property
    def net(self) -> Network:
        """The network part (built once per architecture; it only holds sizes)."""
        return NETWORKS.build(self.network, self, dict(self.network_options))

    @property
    def feature_dim(self) -> int:
        """Width of the encoder trunk's output."""
        return self.net.feature_dim

    def encoder_trunk(self) -> nn.Module:
        return self.net.encoder()

    def decoder(self, params_per_dim: int = 1) -> nn.Module:
        return self.net.decoder(params_per_dim)


@dataclass(frozen=True)
class MLP(Network):
    """Fully connected trunks: encoder ``D -> hidden``, decoder ``latent -> reversed(hidden)
    -> params_per_dim * D`` (today's networks, sized by ``[model] hidden, activation``).
    """

    arch: Architecture

    @property
    def feature_dim(self) -> int:
        return self.arch.hidden[-1] if self.arch.hidden else self.arch.data_dim

    def encoder(self) -> nn.Module:
        return mlp(self.arch.data_dim, self.arch.hidden, None, self.arch.activation)

    def decoder(self, params_per_dim: int = 1) -> nn.Module:
        a = self.arch
        widths = tuple(reversed(a.hidden))
        return mlp(a.latent_dim, widths, params_per_dim * a.data_dim, a.activation)


class Images(nn.Module):
    """Reshape rows ``(..., D)`` to images ``(-1, C, H, W)``, run ``body``, and give back
    ``(..., F)``: the leading (plate, particle) dimensions are folded into one batch."""

    def __init__(self, shape: Tuple[int, ...], body: nn.Module):
        super().__init__()
        self.shape = shape
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        out = self.body(x.reshape(-1, *self.shape))
        return out.reshape(*lead, -1)


class ToImages(nn.Module):
    """``(N, F)`` -> ``(N, *shape)``."""

    def __init__(self, shape: Tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(-1, *self.shape)


@dataclass(frozen=True)
class Conv(Network):
    """A DCGAN-style convolutional pair for images of any C x H x W (Radford et al. 2016).

    Encoder: ``len(channels)`` convolutions (``kernel`` x ``kernel``, stride 2, padding
    ``(kernel - 1) // 2``), each followed by the activation, then a linear layer to
    ``features``. Decoder: linear ``latent -> features -> channels[-1] x h x w``, then the
    transposed convolutions in reverse, the last one to ``params_per_dim * C`` channels with no
    activation. Each transposed convolution's ``output_padding`` is chosen so that its output
    has exactly the size the matching encoder layer took in, so odd sizes (28 -> 14 -> 7 -> 3
    and back) need no cropping.
    """

    arch: Architecture
    channels: Tuple[int, ...]
    kernel: int
    features: int
    activation: str

    @property
    def feature_dim(self) -> int:
        return self.features

    def sizes(self) -> List[Tuple[int, int]]:
        """Spatial size (H, W) before each convolution and after the last."""
        pad = (self.kernel - 1) // 2
        sizes = [tuple(self.arch.shape[1:])]
        for _ in self.channels:
            sizes.append(tuple((s + 2 * pad - self.kernel) // 2 + 1 for s in sizes[-1]))
        return sizes

    def encoder(self) -> nn.Module:
        c, pad, act = self.arch.shape[0], (self.kernel - 1) // 2, self.activation
        layers: List[nn.Module] = []
        for width in self.channels:
            layers += [nn.Conv2d(c, width, self.kernel, 2, pad), ACTIVATIONS[act]()]
            c = width
        h, w = self.sizes()[-1]
        layers += [
            nn.Flatten(),
            nn.Linear(c * h * w, self.features),
            ACTIVATIONS[act](),
        ]
        return Images(self.arch.shape, nn.Sequential(*layers))

    def decoder(self, params_per_dim: int = 1) -> nn.Module:
        pad, act, sizes = (self.kernel - 1) // 2, self.activation, self.sizes()
        h, w = sizes[-1]
        last = self.channels[-1]
        layers: List[nn.Module] = [
            nn.Linear(self.arch.latent_dim, self.features),
            ACTIVATIONS[act](),
            nn.Linear(self.features, last * h * w),
            ACTIVATIONS[act](),
            ToImages((last, h, w)),
        ]
        outs = list(reversed(self.channels[:-1])) + [
            params_per_dim * self.arch.shape[0]
        ]
        for i, width in enumerate(outs):
            before, after = sizes[-1 - i], sizes[-2 - i]
            extra = tuple(
                t - ((s - 1) * 2 - 2 * pad + self.kernel) for s, t in zip(before, after)
            )
            layers.append(
                nn.ConvTranspose2d(
                    last, width, self.kernel, 2, pad, output_padding=extra
                )
            )
            if i < len(outs) - 1:
                layers.append(ACTIVATIONS[act]())
            last = width
        return Images((self.arch.latent_dim,), nn.Sequential(*layers))


@NETWORKS.register("mlp")
def mlp_network(arch: Architecture) -> Network:
    """Fully connected encoder and decoder, sized by ``[model] hidden`` and ``activation``."""
    return MLP(arch)


@NETWORKS.register("conv")
def conv_network(
    arch: Architecture,
    channels: Sequence[int] = (32, 64),
    kernel: int = 4,
    features: int = 256,
    activation: str = "relu",
) -> Network:
    """Strided convolutions / transposed convolutions for C x H x W images."""
    if len(arch.shape) != 3:
        raise ConfigError(
            f"network 'conv' needs image data of shape (C, H, W), but this data set's "
            f"examples have shape {arch.shape}; use network 'mlp' for flat data"
        )
    if not channels or not all(int(c) >= 1 for c in channels):
        raise ConfigError(
            f"network 'conv' option channels must be a non-empty list of positive widths, "
            f"got {list(channels)}"
        )
    if kernel not in (3, 4, 5):
        raise ConfigError(
            f"network 'conv' option kernel must be 3, 4 or 5, got {kernel}"
        )
    if features < 1:
        raise ConfigError(
            f"network 'conv' option features must be >= 1, got {features}"
        )
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"network 'conv' option activation must be one of {', '.join(ACTIVATIONS)}, "
            f"got '{activation}'"
        )
    net = Conv(arch, tuple(int(c) for c in channels), kernel, features, activation)
    smallest = net.sizes()[-1]
    if min(smallest) < 1:
        raise ConfigError(
            f"network 'conv': {len(channels)} stride-2 layers shrink {arch.shape[1]}x"
            f"{arch.shape[2]} images to nothing; use fewer channels entries"
        )
    return net


def zero_last_layer(flow: nn.Module) -> nn.Module:
    """Make an affine autoregressive flow (plain: ``.arn``, conditional: ``.nn``) start as the
    identity: its network's output layer gives shift 0 and log-scale 0."""
    last = (flow.arn if hasattr(flow, "arn") else flow.nn).layers[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return flow
