"""The sections of a run configuration: frozen dataclasses, and how a config becomes TOML.

A config has fixed sections (``[data]``, ``[model]``, ``[train]``: the dataclasses below) and part
sections (``[prior]``, ``[guide]``, ``[likelihood]``, ``[objective]``, ``[network]``), each holding
a part's ``name`` plus that part's own options, which the part's registry checks (``[network]
name = "mlp"``, the default, is sized by ``[model] hidden`` and ``activation``). ``to_dict``
and ``config.loading.from_dict`` round-trip exactly, so a run's saved ``config.toml`` rebuilds
the same run.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import tomli_w

from pyro_vae.registry import GUIDES, LIKELIHOODS, NETWORKS, OBJECTIVES, PRIORS

FROM_PYTHON = "python"  # data.dataset of a run fitted on arrays given from Python


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # a name in registry.DATASETS (see data.py)
    data_dir: Optional[str] = None  # folder of the file-based sets and of "images"
    data_path: Optional[str] = None  # the .npy/.npz file of "array"
    # threshold grey images at 0.5: "auto" does for a likelihood of binary data (bernoulli),
    # not otherwise; true/false force it (ignored for binarized-mnist). Resolved on loading.
    binarize: Union[bool, str] = "auto"
    image_size: Optional[Tuple[int, ...]] = None  # "images": resize to [H, W]
    test_fraction: float = 0.1  # "array"/"images" without given splits: seeded split
    valid_fraction: float = 0.0
    split_seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    family: str = "vae"  # a name in registry.FAMILIES (see pyro_vae/models/)
    latent_dim: int = 10
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    # the hierarchical family (models/hierarchical.py): sizes of z_1 .. z_L (empty: two layers
    # of latent_dim) and the inference scheme, "bottom_up", "ladder" or "coupled"
    latent_layers: Tuple[int, ...] = ()
    inference: str = "bottom_up"
    classes: int = 10  # semi_supervised: the number of classes y
    labels: float = -1.0  # semi_supervised: labels kept, N >= 1 or a fraction (-1: all)
    alpha: float = 0.1  # semi_supervised: aux. weight / N (Kingma et al. 2014)
    labelled_every: int = 0  # semi_supervised: every k-th batch labelled (0: shuffled)
    given: int = 1  # conditional: quadrants of each image given (1, 2 or 3)
    condition: str = "quadrants"  # conditional: c is "quadrants" (given) or "label"


@dataclass(frozen=True)
class PartConfig:
    name: str
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    lr_decay: float = 1.0  # the learning rate of epoch e is lr * lr_decay ** (e - 1)
    beta: float = 1.0
    kl_warmup_epochs: int = 0  # the linear schedule's warm-up (0: beta throughout)
    kl_schedule: str = "linear"  # or "cyclical" (Fu et al. 2019); see schedules.py
    kl_cycles: int = 4  # cyclical: number of cycles over the whole run
    kl_cycle_ratio: float = 0.5  # cyclical: share of each cycle spent rising to beta
    free_bits: float = 0.0  # nats per latent dimension that cost nothing (0: off)
    reconstruction_weight: float = 1.0  # lambda_rec, the scale of the "x" site
    device: str = "auto"
    seed: int = 0
    validate: bool = (
        False  # Pyro's distribution/trace validation; slower, for debugging
    )
    precision: str = "fp32"  # "bf16": bfloat16 autocast in the training step
    check_every: int = 1  # steps between host synchronisations (loss NaN checks)
    tensorboard: bool = False  # log scalars, figures, config to RUN/tensorboard/
    patience: int = (
        0  # stop after this many epochs without a better valid ELBO (0: off)
    )
    eval_every: int = (
        0  # epochs between test/valid ELBOs (0: auto, see run/epoch_eval.py)
    )
    eval_rows: int = (
        1000  # a fixed seeded subset of each split scores the ELBO (0: all)
    )


PARTS = {
    "prior": PRIORS,
    "guide": GUIDES,
    "likelihood": LIKELIHOODS,
    "objective": OBJECTIVES,
    "network": NETWORKS,
}
DEFAULT_PARTS = {
    "prior": "standard_normal",
    "guide": "diagonal",
    "likelihood": "bernoulli",
    "objective": "trace",
    "network": "mlp",
}
FIXED = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    prior: PartConfig = PartConfig(DEFAULT_PARTS["prior"])
    guide: PartConfig = PartConfig(DEFAULT_PARTS["guide"])
    likelihood: PartConfig = PartConfig(DEFAULT_PARTS["likelihood"])
    objective: PartConfig = PartConfig(DEFAULT_PARTS["objective"])
    train: TrainConfig = TrainConfig()
    network: PartConfig = PartConfig(DEFAULT_PARTS["network"])

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Nested plain dict (TOML-ready: no ``None`` values, tuples as lists)."""
        out: Dict[str, Dict[str, Any]] = {}
        for section in FIXED:
            values = dataclasses.asdict(getattr(self, section))
            out[section] = {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in values.items()
                if v is not None
            }
        for section in PARTS:
            part = getattr(self, section)
            out[section] = {"name": part.name, **part.options}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())
