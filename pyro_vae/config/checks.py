"""Value checks of a run configuration: ranges, seeds, devices, flow widths, and
the KL schedule / free bits / reconstruction weight.

:func:`validate` runs on every :class:`~pyro_vae.config.Config` that
:func:`~pyro_vae.config.from_dict` builds (after the type checks, which the registry does);
the CLI and the parts call the single checks (:func:`check_seed`, :func:`check_device`,
:func:`flow_widths`) on values that do not live in a config. Every failure
raises :class:`~pyro_vae.errors.ConfigError` with one line saying what to change.
``pyro_vae.config`` re-exports the public names.
"""

import math
import os
from typing import Any, List

from pyro_vae.config.binarize import validate_data_source
from pyro_vae.config.sections import FROM_PYTHON, Config, DataConfig
from pyro_vae.errors import ConfigError
from pyro_vae.registry import DATASETS, FAMILIES, did_you_mean

ACTIVATIONS = ("tanh", "relu", "softplus", "elu", "gelu")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
SEED_LIMIT = 2**32  # NumPy's seeds lie in [0, 2**32)
MAX_PARTICLES = 100_000  # more samples per data point than any bound needs
NO_INVERSE_GUIDES = ("planar",)  # flows whose density cannot be evaluated at any z
KL_SCHEDULES = ("linear", "cyclical")  # see infer/schedules.py
INFERENCE = ("bottom_up", "ladder", "coupled")  # [model] inference, hierarchical family
# free bits need a KL term that splits over latent dimensions (infer/schedules.py)
FREE_BITS_OBJECTIVES = ("trace", "meanfield")
FREE_BITS_GUIDES = ("diagonal",)
FREE_BITS_PRIORS = ("standard_normal", "learned_normal")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Range checks that the type checks cannot express."""
    d, m, t = config.data, config.model, config.train
    _validate_data(d)
    FAMILIES.get(m.family)  # an unknown name lists the valid ones
    _require(m.latent_dim >= 1, f"[model] latent_dim must be >= 1, got {m.latent_dim}")
    _require(
        all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in m.hidden
        ),
        f"[model] hidden must be a list of positive layer widths like [200, 200], got {list(m.hidden)}",
    )
    _require(
        m.activation in ACTIVATIONS,
        f"unknown activation '{m.activation}'{did_you_mean(m.activation, list(ACTIVATIONS))}; "
        f"valid activations: {', '.join(ACTIVATIONS)}",
    )
    _require(
        all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1
            for s in m.latent_layers
        ),
        f"[model] latent_layers must be a list of positive layer sizes like [40, 40], got "
        f"{list(m.latent_layers)}",
    )
    _require(
        m.inference in INFERENCE,
        f"unknown [model] inference '{m.inference}'{did_you_mean(m.inference, list(INFERENCE))}"
        f"; valid: {', '.join(INFERENCE)}",
    )
    _require(t.epochs >= 1, f"[train] epochs must be >= 1, got {t.epochs}")
    _require(t.batch_size >= 1, f"[train] batch_size must be >= 1, got {t.batch_size}")
    _require(
        math.isfinite(t.lr) and t.lr > 0,
        f"[train] lr must be a positive number, got {t.lr}",
    )
    _require(
        math.isfinite(t.lr_decay) and 0 < t.lr_decay <= 1,
        f"[train] lr_decay must be in (0, 1] (the per-epoch factor; 1 keeps lr constant), "
        f"got {t.lr_decay}",
    )
    _require(
        math.isfinite(t.beta) and t.beta > 0,
        f"[train] beta must be a finite number > 0 (1 is the plain ELBO; Pyro's poutine.scale "
        f"refuses 0), got {t.beta}",
    )
    _require(
        t.kl_warmup_epochs >= 0,
        f"[train] kl_warmup_epochs must be >= 0 (0 turns warm-up off), got {t.kl_warmup_epochs}",
    )
    _validate_weights(config)
    check_seed("[train] seed", t.seed)
    check_device(t.device)
    _require(
        d.data_dir is None or isinstance(d.data_dir, str),
        f"[data] data_dir must be a directory path (a string), got {d.data_dir!r}",
    )
    _require(
        t.precision in PRECISIONS,
        f"[train] precision must be one of {', '.join(PRECISIONS)}, got '{t.precision}'",
    )
    _require(
        t.check_every >= 1,
        f"[train] check_every must be >= 1 (steps between loss checks), got {t.check_every}",
    )
    for key in ("patience", "eval_every", "eval_rows"):
        value = getattr(t, key)
        _require(
            value >= 0, f"[train] {key} must be >= 0 (0: {_ZERO[key]}), got {value}"
        )
    validate_data_source(config)
    particles = config.objective.options.get("num_particles", 1)
    _require(particles >= 1, f"[objective] num_particles must be >= 1, got {particles}")
    _require(
        particles <= MAX_PARTICLES,
        f"[objective] num_particles must be <= {MAX_PARTICLES} (the cost grows with it), "
        f"got {particles}",
    )
    o = config.objective
    _require(
        not (
            o.name == "iwae"
            and o.options.get("dreg")
            and config.guide.name in NO_INVERSE_GUIDES
        ),
        f"objective iwae with dreg = true needs a guide whose density can be evaluated at "
        f"any z; guide '{config.guide.name}' has no inverse: set objective.dreg=false or "
        f"use guide iaf",
    )


_ZERO = {"patience": "off", "eval_every": "auto", "eval_rows": "every row"}


def check_seed(where: str, seed: int) -> None:
    """Seeds lie in [0, 2**32) (NumPy's range)."""
    _require(
        0 <= seed < SEED_LIMIT,
        f"{where} must be in [0, 2**32) = [0, {SEED_LIMIT - 1}], got {seed}",
    )


def check_device(name: str, where: str = "device") -> None:
    _require(
        name in DEVICES
        or (name.startswith("cuda:") and name[len("cuda:") :].isdigit()),
        f"unknown {where} '{name}'; use auto (CUDA when available), cpu, cuda or cuda:N",
    )


def flow_widths(
    where: str, hidden: Any, latent_dim: int, autoregressive: bool
) -> List[int]:
    """A flow's hidden widths. Unset (``None``) follows the latent size:
    ``max(128, 2 * latent_dim)``. An autoregressive (MADE, Germain et al. 2015) network needs
    every hidden width >= its input size, the latent size."""
    if hidden is None:
        return [max(128, 2 * latent_dim)]
    _require(
        isinstance(hidden, (list, tuple))
        and len(hidden) > 0
        and all(isinstance(h, int) and not isinstance(h, bool) for h in hidden),
        f"{where} option flow_hidden must be a list of widths like [128], got {hidden!r}",
    )
    _require(
        all(h >= 1 for h in hidden),
        f"{where} option flow_hidden must hold positive widths, got {list(hidden)}",
    )
    _require(
        not autoregressive or min(hidden) >= latent_dim,
        f"{where} option flow_hidden={list(hidden)} is narrower than "
        f"model.latent_dim={latent_dim} (an autoregressive flow needs every width >= the "
        f"latent size); use flow_hidden=[{max(128, 2 * latent_dim)}] or leave it unset",
    )
    return list(hidden)


def _validate_weights(config: Config) -> None:
    """The KL schedule, free bits and the reconstruction weight (see schedules.py)."""
    t = config.train
    _require(
        t.kl_schedule in KL_SCHEDULES,
        f"unknown [train] kl_schedule '{t.kl_schedule}'"
        f"{did_you_mean(t.kl_schedule, list(KL_SCHEDULES))}; valid: {', '.join(KL_SCHEDULES)}",
    )
    _require(
        t.kl_schedule == "linear" or t.kl_warmup_epochs == 0,
        f"[train] kl_warmup_epochs belongs to the linear schedule; with kl_schedule = "
        f"'{t.kl_schedule}' set kl_cycles and kl_cycle_ratio instead (kl_warmup_epochs = 0)",
    )
    _require(t.kl_cycles >= 1, f"[train] kl_cycles must be >= 1, got {t.kl_cycles}")
    _require(
        math.isfinite(t.kl_cycle_ratio) and 0 < t.kl_cycle_ratio <= 1,
        f"[train] kl_cycle_ratio must be in (0, 1] (the share of each cycle spent rising to "
        f"beta), got {t.kl_cycle_ratio}",
    )
    _require(
        math.isfinite(t.reconstruction_weight) and t.reconstruction_weight > 0,
        f"[train] reconstruction_weight must be a finite number > 0 (1 is the plain ELBO), "
        f"got {t.reconstruction_weight}",
    )
    objective = config.objective.name
    _require(
        t.reconstruction_weight == 1 or objective != "iwae",
        "[train] reconstruction_weight scales the ELBO's reconstruction term, which the 'iwae' "
        "bound does not have (it would temper p(x|z) inside the log-mean-exp); use 1 with iwae",
    )
    _require(
        math.isfinite(t.free_bits) and t.free_bits >= 0,
        f"[train] free_bits must be a number of nats >= 0 (0 turns it off), got {t.free_bits}",
    )
    if t.free_bits == 0:
        return
    _require(
        objective in FREE_BITS_OBJECTIVES,
        f"[train] free_bits needs an objective with a separate KL term "
        f"({', '.join(FREE_BITS_OBJECTIVES)}), not '{objective}'; set free_bits = 0",
    )
    guide, prior = config.guide.name, config.prior.name
    _require(
        guide in FREE_BITS_GUIDES and prior in FREE_BITS_PRIORS,
        f"[train] free_bits needs a KL that splits over latent dimensions: guide "
        f"{' or '.join(FREE_BITS_GUIDES)} with prior {' or '.join(FREE_BITS_PRIORS)}, not "
        f"guide '{guide}' with prior '{prior}'; set free_bits = 0 or change the pair",
    )


def _validate_data(d: DataConfig) -> None:
    if d.dataset != FROM_PYTHON:
        DATASETS.get(d.dataset)  # an unknown name lists the valid ones
    size = d.image_size
    _require(
        size is None
        or (
            isinstance(size, tuple)
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
            and min(size) >= 1
        ),
        f"[data] image_size must be [height, width] in pixels, like [28, 28], got {size}",
    )
    for key in ("test_fraction", "valid_fraction"):
        value = getattr(d, key)
        _require(0 <= value < 1, f"[data] {key} must be in [0, 1), got {value}")
    _require(
        d.test_fraction + d.valid_fraction < 1,
        f"[data] test_fraction + valid_fraction must be < 1 (the rest trains), got "
        f"{d.test_fraction} + {d.valid_fraction}",
    )
    _require(d.split_seed >= 0, f"[data] split_seed must be >= 0, got {d.split_seed}")
    for key in ("data_dir", "data_path"):  # a name os.fsdecode made of bytes not UTF-8
        path = getattr(d, key)
        if isinstance(path, str) and not path.isascii():
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"[data] {key} {os.fsencode(path)!r} is not valid UTF-8 text, which "
                    f"the run's config.toml must record; rename it, or link to it under a "
                    f"UTF-8 name"
                ) from None
