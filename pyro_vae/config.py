"""Run configuration: frozen dataclasses, TOML files and CLI overrides.

A config has six sections. ``[data]``, ``[model]`` and ``[train]`` hold fixed fields;
``[prior]``, ``[guide]``, ``[likelihood]``, ``[objective]`` and ``[network]`` hold a part's ``name``
plus that part's own options, which the part's registry checks (``[network] name = "mlp"``, the
default, is sized by ``[model] hidden`` and ``activation``; ``name = "conv"`` takes its own
options, see ``networks.py``). Precedence: defaults < TOML file <
command-line flags. ``to_dict``/``from_dict`` round-trip exactly, so a run's saved
``config.toml`` rebuilds the same run. The value checks (ranges, seeds, devices, the memory
size check, flow widths, KL schedules and free bits) live in ``config_checks.py``;
:func:`from_dict` runs them on every config it builds.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tomli_w

from .config_checks import (  # noqa: F401  (re-exported: priors, guides, evaluate)
    check_device,
    check_seed,
    check_size,
    flow_widths,
    validate,
)
from .errors import ConfigError
from .registry import (
    GUIDES,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    PRIORS,
    check_type,
    did_you_mean,
)

FROM_PYTHON = "python"  # data.dataset of a run fitted on arrays given from Python


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # a name in registry.DATASETS (see data.py)
    data_dir: Optional[str] = None  # folder of the file-based sets and of "images"
    data_path: Optional[str] = None  # the .npy/.npz file of "array"
    binarize: bool = True  # threshold grey images at 0.5 (ignored for binarized-mnist)
    image_size: Optional[Tuple[int, ...]] = None  # "images": resize to [H, W]
    test_fraction: float = 0.1  # "array"/"images" without given splits: seeded split
    valid_fraction: float = 0.0
    split_seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 10
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"


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


def register_parts() -> None:
    """Import the modules whose registered functions a config names (priors, guides,
    likelihoods, objectives, networks, data sets). ``import pyro_vae`` stays light: they load here,
    the first time a config is built."""
    from . import data, guides, likelihoods, networks, objectives, priors  # noqa: F401


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts (missing keys take defaults)."""
    register_parts()
    _check_tables(raw)
    sections = list(FIXED) + list(PARTS)
    for section in raw:
        if section not in sections:
            raise ConfigError(
                f"unknown config section [{section}]{did_you_mean(section, sections)}; "
                f"valid sections: {', '.join(sections)}"
            )
    built: Dict[str, Any] = {}
    for section, cls in FIXED.items():
        built[section] = _fixed_section(section, cls, dict(raw.get(section, {})))
    for section, registry in PARTS.items():
        options = dict(raw.get(section, {}))
        name = options.pop("name", DEFAULT_PARTS[section])
        check_type(f"[{section}] name", name, "")
        registry.check_options(name, options)
        built[section] = PartConfig(name, options)
    config = Config(**built)
    validate(config)
    return config


def _check_tables(raw: Mapping[str, Any]) -> None:
    for section, values in raw.items():
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"config section [{section}] must be a table of key = value pairs"
            )


def _fixed_section(section: str, cls: type, values: Dict[str, Any]) -> Any:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(
                f"unknown key '{key}' in [{section}]{did_you_mean(key, list(defaults))}; "
                f"valid keys: {', '.join(defaults)}"
            )
        check_type(f"[{section}] {key}", value, defaults[key])
        if isinstance(defaults[key], tuple) or (
            key == "image_size" and isinstance(value, list)
        ):
            values[key] = tuple(value)
    return cls(**values)


def packaged_configs() -> List[str]:
    """Names of the example configs shipped in ``pyro_vae/configs``."""
    root = resources.files("pyro_vae") / "configs"
    return sorted(
        p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml")
    )


def read_toml(path_or_name: str) -> Dict[str, Any]:
    """Parse a config file, or a packaged config given by name (``mnist_vamp``)."""
    path = Path(path_or_name)
    if path.is_file():
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config '{path_or_name}' is not UTF-8 text (byte {err.object[err.start]:#x} "
                f"at offset {err.start}); save it as UTF-8, as TOML requires"
            ) from None
        except OSError as err:
            raise ConfigError(
                f"config '{path_or_name}' cannot be read: {err.strerror}"
            ) from None
    elif path_or_name in packaged_configs():
        text = (
            resources.files("pyro_vae") / "configs" / f"{path_or_name}.toml"
        ).read_text()
    else:
        names = packaged_configs()
        raise ConfigError(
            f"config '{path_or_name}' is neither a file nor a packaged config"
            f"{did_you_mean(path_or_name, names)}; packaged configs: {', '.join(names)}"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config '{path_or_name}' is not valid TOML: {err}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (``4``, ``1e-3``, ``[200, 200]``,
    ``true``), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(raw: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Apply ``{"section.key": value}`` overrides to nested dicts. Naming a different part
    (``prior.name``) drops the old part's options, which belong to that part alone."""
    _check_tables(raw)
    merged = {section: dict(values) for section, values in raw.items()}
    for dotted, value in overrides.items():
        section, sep, key = dotted.partition(".")
        if not sep or not key:
            raise ConfigError(
                f"override '{dotted}' must look like section.key (for example train.epochs)"
            )
        values = merged.setdefault(section, {})
        if section in PARTS and key == "name" and values.get("name", value) != value:
            values.clear()
        values[key] = value
    # part options given on the command line survive a part-name change
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        merged[section][key] = value
    return merged


def load(
    path_or_name: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None
) -> Config:
    """Defaults, then the TOML file (or packaged config), then ``overrides``."""
    raw = read_toml(path_or_name) if path_or_name else {}
    return from_dict(merge(raw, overrides or {}))
