"""``data.binarize`` and the data a likelihood needs; ``data.data_path`` and the data set.

``data.binarize = "auto"`` (the default) thresholds grey pixels at 0.5 for a likelihood of
binary data (bernoulli) and leaves them alone otherwise; ``true`` and ``false`` force it.
:func:`pyro_vae.config.from_dict` resolves "auto" to true or false, so a run's saved
``config.toml`` says what was done. A likelihood says what it needs by a ``needs``
attribute on its registered factory (:data:`BINARY`, :data:`EIGHT_BIT`), so a likelihood a
user registers takes part the same way. Binarized data under an 8-bit likelihood (the
discretized logistic sees only levels 0 and 255, and its scale collapses) is refused here,
with the flag to change.
"""

from typing import Any

from pyro_vae.config.sections import FROM_PYTHON, Config
from pyro_vae.errors import ConfigError
from pyro_vae.registry import DATASETS, LIKELIHOODS

BINARY, EIGHT_BIT = "binary", "8-bit"  # what a likelihood factory's ``needs`` may say


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def likelihood_needs(name: str) -> Any:
    """What likelihood ``name`` needs of its data: :data:`BINARY` (0/1 pixels),
    :data:`EIGHT_BIT` (grey levels k/255) or None (any values it accepts); its factory's
    ``needs`` attribute says, so a user's registered likelihood can say it too."""
    return getattr(LIKELIHOODS.get(name), "needs", None)


def check_binarize(value: Any) -> None:
    _require(
        isinstance(value, bool) or value == "auto",
        f'[data] binarize must be true, false or "auto" (binarize for a likelihood of '
        f"binary data), got {value!r}",
    )


def resolve_binarize(value: Any, likelihood: str) -> Any:
    """``data.binarize`` as true/false: "auto" binarizes for a likelihood that needs binary
    data (bernoulli) and not otherwise; true and false stay as they are."""
    if isinstance(value, bool):
        return value
    return likelihood_needs(likelihood) == BINARY


def validate_data_source(config: Config) -> None:
    """Refuse binarized data under an 8-bit likelihood, and ``data_path`` beside a data set
    that does not read it."""
    d, name = config.data, config.likelihood.name
    check_binarize(d.binarize)
    _require(
        not (d.binarize is True and likelihood_needs(name) == EIGHT_BIT),
        f"data.binarize = true turns every pixel into 0 or 1, but likelihood '{name}' scores "
        f"8-bit grey levels (0-255): set --set data.binarize=auto (or false), or use "
        f"--likelihood bernoulli for binary data",
    )
    reads_path = d.dataset == FROM_PYTHON or getattr(
        DATASETS.get(d.dataset), "reads_path", False
    )
    _require(
        d.data_path is None or reads_path,
        f"--data-path (data.data_path) is read by data set 'array', but data set "
        f"'{d.dataset}' is named: drop --dataset (--data-path implies array) or drop "
        f"--data-path",
    )
