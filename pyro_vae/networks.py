"""Plain ``torch.nn`` trunks shared by encoders, decoders and flows."""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from torch import nn

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


@dataclass(frozen=True)
class Architecture:
    """The sizes every part is built from: data and latent dimensions, the MLP hidden widths
    (encoder trunk; the decoder mirrors them) and the activation."""

    data_dim: int
    latent_dim: int
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"

    @property
    def feature_dim(self) -> int:
        """Width of the encoder trunk's output (the data itself when there are no hidden layers)."""
        return self.hidden[-1] if self.hidden else self.data_dim

    def encoder_trunk(self) -> nn.Sequential:
        return mlp(self.data_dim, self.hidden, None, self.activation)

    def decoder(self) -> nn.Sequential:
        return mlp(
            self.latent_dim,
            tuple(reversed(self.hidden)),
            self.data_dim,
            self.activation,
        )
