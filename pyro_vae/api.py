"""The Python API: a VAE with its config and the record of its data.

::

    model = Model(latent_dim=2, likelihood="continuous_bernoulli", epochs=20)
    model.fit(x)                       # numpy or torch rows/images, a Dataset, or a data set name
    model.log_marginal_likelihood(x_new).log_marginal   # log p(x) per row (importance sampled)
    mean, samples = model.encode(x_new, num_samples=5)
    model.decode(mean); model.sample(16); model.figures("figs", x_new)
    model.save("runs/mine"); again = load_run("runs/mine")

``Model`` only delegates: ``build`` makes the VAE, ``train.fit`` runs SVI, ``marginal`` and
``evaluate`` score, ``figures`` draws. Inputs pass :func:`pyro_vae.data.as_rows` (any real
dtype, (N, D) rows or images, values in [0, 1] or 0-255) and are moved to the VAE's device and
dtype.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Union

import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.config import PARTS, Config
from pyro_vae.data import FROM_PYTHON, Dataset
from pyro_vae.data import record as data_record
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.estimate.evaluate import evaluate as evaluate_run
from pyro_vae.estimate.marginal import MarginalEstimate, log_marginal_likelihood
from pyro_vae.models import build
from pyro_vae.models.vae import VAE
from pyro_vae.registry import did_you_mean
from pyro_vae.run import checkpoint
from pyro_vae.run.loading import load_run as load_parts
from pyro_vae.run.train import CHECKPOINT_FILE, CONFIG_FILE, fit
from pyro_vae.viz import figures

Array = Any  # a NumPy array or a torch tensor
MEAN_DRAWS = (
    256  # draws averaged for the posterior mean of a guide without a closed form
)


class Encoding(NamedTuple):
    """``mean``: E_q[z | x] per row (n, latent); ``samples``: draws z ~ q(z | x),
    (num_samples, n, latent)."""

    mean: torch.Tensor
    samples: torch.Tensor


def make_config(config: Union[Config, str, Dict, None] = None, **options) -> Config:
    """A validated :class:`Config` from a Config, a TOML file or packaged config name, or nested
    dicts, then keyword ``options``: a fixed key by its name (``latent_dim=2``, ``epochs=5``,
    ``hidden=[64]``, ``data_path=...``), a part by name or as a dict of name and options
    (``prior="vamp"``, ``guide={"name": "iaf", "num_flows": 2}``)."""
    if isinstance(config, Config):
        raw = config.to_dict()
    elif isinstance(config, str):
        raw = cfg.read_toml(config)
    else:
        raw = dict(config or {})
    sections = {
        s: [f.name for f in dataclasses.fields(c)] for s, c in cfg.FIXED.items()
    }
    overrides: Dict[str, Any] = {}
    for key, value in options.items():
        if key in PARTS:
            part = value if isinstance(value, dict) else {"name": value}
            overrides.update({f"{key}.{k}": v for k, v in part.items()})
            continue
        owners = [s for s, keys in sections.items() if key in keys]
        if not owners:
            valid = sorted(set(PARTS) | {k for keys in sections.values() for k in keys})
            raise ConfigError(
                f"unknown option '{key}'{did_you_mean(key, valid)}; valid options: "
                f"{', '.join(valid)}"
            )
        overrides[f"{owners[0]}.{key}"] = (
            list(value) if isinstance(value, tuple) else value
        )
    return cfg.from_dict(cfg.merge(raw, overrides))


def load_data(
    x: Array,
    test: Optional[Array] = None,
    labels: Optional[Array] = None,
    test_labels: Optional[Array] = None,
    config: Optional[Config] = None,
) -> Dataset:
    """A :class:`Dataset` of arrays given from Python. Without ``test``, the rows of ``x`` are
    split by the config's seeded split (``data.test_fraction``, ``data.valid_fraction``,
    ``data.split_seed``)."""
    config = config or make_config()
    return data.from_arrays(x, test, labels, test_labels, config.data)


class Model:
    """A VAE, its :class:`Config`, and where its data came from.

    Build it from a config (Config, TOML path, packaged config name or dicts) and/or keyword
    options (see :func:`make_config`); the network is built on the first :meth:`fit`, when the
    data's shape is known."""

    def __init__(self, config: Union[Config, str, Dict, None] = None, **options):
        self.config: Config = make_config(config, **options)
        self.vae: Optional[VAE] = None
        self.shape: Optional[tuple] = None
        self.metrics: List[Dict] = []
        self._data: Optional[Dataset] = None

    def fit(
        self,
        x: Union[Array, Dataset, str, None] = None,
        test: Optional[Array] = None,
        labels: Optional[Array] = None,
        run_dir: Union[str, Path, None] = None,
        progress: bool = False,
        test_labels: Optional[Array] = None,
    ) -> "Model":
        """Train with SVI on ``x``: arrays (``test`` held out, else a seeded split of ``x``;
        ``labels`` colour the latent scatter), a :class:`Dataset`, a registered data set's
        name, or ``None`` for the config's data set. With ``run_dir``, the run directory is
        written as ``pyro-vae train`` writes it. Calling ``fit`` again trains on from the
        current weights (with a fresh optimizer) for ``train.epochs`` more epochs.
        """
        if x is None or isinstance(x, str):
            name = self.config.data.dataset if x is None else x
            self._set_data(dataclasses.replace(self.config.data, dataset=name))
            dataset = data.load(self.config.data)
        elif isinstance(x, Dataset):
            dataset = x
            if x.name != self.config.data.dataset:
                self._set_data(cfg.DataConfig(dataset=FROM_PYTHON, binarize=False))
        else:
            dataset = load_data(x, test, labels, test_labels, config=self.config)
            self._set_data(
                dataclasses.replace(
                    self.config.data,
                    dataset=FROM_PYTHON,
                    binarize=False,
                    data_dir=None,
                    data_path=None,
                )
            )
        if self.vae is None:
            self.shape = tuple(dataset.shape)
            self.vae = build(self.config, self.shape)
        elif tuple(dataset.shape) != self.shape:
            raise DataError(
                f"this model was built for examples of shape {self.shape}; the data's "
                f"examples have shape {tuple(dataset.shape)}"
            )
        self._data = dataset
        self.metrics = fit(self.vae, dataset, self.config, run_dir, progress=progress)
        if run_dir is not None:
            data_record.write(Path(run_dir), self.config.data, dataset)
        self.vae.eval()
        return self

    def _set_data(self, data_config: cfg.DataConfig) -> None:
        self.config = cfg.from_dict(
            {
                **self.config.to_dict(),
                "data": Config(data=data_config).to_dict()["data"],
            }
        )

    def _fitted(self) -> VAE:
        if self.vae is None:
            raise ConfigError(
                "the model has no network yet: call fit(x) or load_run(dir)"
            )
        return self.vae

    def rows(self, x: Array) -> torch.Tensor:
        """``x`` as flat float rows on the VAE's device and dtype, checked against its shape."""
        vae = self._fitted()
        rows, shape = data.as_rows(x, "the input")
        if tuple(shape) != self.shape and math.prod(shape) != math.prod(self.shape):
            raise DataError(
                f"the input's examples have shape {tuple(shape)}; this model takes {self.shape}"
            )
        param = next(vae.parameters())
        return rows.to(device=param.device, dtype=param.dtype)

    def evaluate(self, x: Array, num_samples: int = 1000) -> Dict:
        """log p(x) (importance sampled, K = ``num_samples``), the bound ladder, ELBO terms, KL
        per dimension and active units, averaged over the rows of ``x``, and bits/dim for
        a likelihood of binary or 8-bit pixels (as ``pyro-vae evaluate`` reports them).
        """
        return evaluate_run(self._fitted(), self.rows(x), num_samples)

    def log_marginal_likelihood(
        self, x: Array, num_samples: int = 1000
    ) -> MarginalEstimate:
        """Per-row log p(x) by importance sampling with the guide as proposal, with its
        standard error and effective sample size (Burda et al. 2016)."""
        from pyro_vae.process import prepare_heap

        vae, rows = self._fitted(), self.rows(x)
        if rows.device.type == "cpu":
            prepare_heap()
        return log_marginal_likelihood(
            vae.model, vae.guide, rows, num_samples=num_samples
        )

    @torch.no_grad()
    def encode(self, x: Array, num_samples: int = 1) -> Encoding:
        """The posterior q(z | x) of each row: its mean (for flow guides, which have no
        closed-form mean, a Monte Carlo average of ``MEAN_DRAWS`` draws) and ``num_samples``
        draws; of the top layer z_L for a family with several (``estimate.layer_diagnostics.encode``).
        """
        from pyro_vae.estimate.layer_diagnostics import encode

        return Encoding(*encode(self._fitted(), self.rows(x), num_samples, MEAN_DRAWS))

    @torch.no_grad()
    def decode(self, z: Array) -> torch.Tensor:
        """E[x | z] per row of ``z`` (the top layer's z_L for a family with several; flat rows;
        ``self.shape`` is one example's shape)."""
        vae = self._fitted()
        param = next(vae.parameters())
        z = torch.as_tensor(data.as_array(z, "z"))
        latent = vae.latent_sites[-1].size
        if z.ndim not in (1, 2) or z.shape[-1] != latent:
            raise DataError(
                f"decode(z) takes latents of shape (n, {latent}) (the model's top latent "
                f"layer has {latent} dimensions); got shape {tuple(z.shape)}"
            )
        z = z.to(device=param.device, dtype=param.dtype).reshape(-1, latent)
        return vae.decode(z)

    def sample(self, num: int) -> torch.Tensor:
        """E[x | z] for ``num`` draws z ~ p(z)."""
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise ConfigError(
                f"sample(num) takes a whole number of samples >= 1, got {num!r}"
            )
        return self._fitted().sample(num)

    def figures(
        self, out_dir: Union[str, Path], x: Optional[Array] = None, labels=None
    ) -> List[Path]:
        """The standard figures (see :mod:`pyro_vae.figures`) for held-out rows ``x`` (default:
        the test split of the data it was fitted on) in ``out_dir``."""
        if x is None:
            if self._data is None:
                raise DataError("pass the inputs to draw: figures(out_dir, x)")
            x, labels = self._data.test, self._data.test_labels
        rows = self.rows(x)
        labels = None if labels is None else torch.as_tensor(labels)
        names = None if self._data is None else self._data.label_names
        return figures.write_figures(
            self._fitted(), rows, self.shape, Path(out_dir), labels, self.metrics, names
        )

    def save(self, run_dir: Union[str, Path]) -> Path:
        """Write ``config.toml``, ``checkpoint.pt`` and ``data.json`` (where the data came
        from) into ``run_dir``; :func:`load_run` reads them back."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_text(run_dir / CONFIG_FILE, self.config.to_toml())
        state = {
            "epoch": len(self.metrics),
            "model": self._fitted().state_dict(),
            "metrics": self.metrics,
            "config": self.config.to_dict(),
        }
        checkpoint.save(run_dir / CHECKPOINT_FILE, state)
        if self._data is not None:
            data_record.write(run_dir, self.config.data, self._data)
        return run_dir


def load_run(
    run_dir: Union[str, Path], device: str = "auto", best: bool = False
) -> Model:
    """A :class:`Model` from a run directory (``pyro-vae train --out`` or :meth:`Model.save`)
    on ``device`` (``auto``: CUDA when there is one). The network's shape comes from the run's
    ``data.json``; the data themselves are not reloaded (give the inputs to ``evaluate`` or
    ``figures``), except for older runs without ``data.json``."""
    config, vae, dataset = load_parts(Path(run_dir), device, best=best, need_data=False)
    model = Model(config)
    model.vae, model._data = vae, dataset
    model.shape = tuple(data_record.run_shape(Path(run_dir), dataset))
    state = checkpoint.load(Path(run_dir) / CHECKPOINT_FILE, map_location="cpu")
    model.metrics = state.get("metrics", [])
    return model
