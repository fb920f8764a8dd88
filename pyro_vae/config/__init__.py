"""Run configuration: frozen dataclasses (``sections``), their value checks (``checks``), and
how a config is built from dicts, TOML files and ``--set`` overrides (``loading``).

A config names parts only through the registries (``pyro_vae.registry``), never by importing
them: this wing is the bottom layer with ``errors``, ``registry`` and ``process``, and imports
nothing else of the library.
"""

from pyro_vae.config.binarize import (  # noqa: F401
    BINARY,
    EIGHT_BIT,
    likelihood_needs,
    resolve_binarize,
)
from pyro_vae.config.checks import (  # noqa: F401  (the public names of the wing)
    FREE_BITS_GUIDES,
    FREE_BITS_OBJECTIVES,
    FREE_BITS_PRIORS,
    KL_SCHEDULES,
    check_device,
    check_seed,
    flow_widths,
    validate,
)
from pyro_vae.config.loading import (  # noqa: F401
    differences,
    from_dict,
    load,
    merge,
    packaged_configs,
    parse_value,
    read_toml,
)
from pyro_vae.config.sections import (  # noqa: F401
    DEFAULT_PARTS,
    FIXED,
    FROM_PYTHON,
    PARTS,
    Config,
    DataConfig,
    ModelConfig,
    PartConfig,
    TrainConfig,
)
from pyro_vae.config.sizes import (  # noqa: F401
    check_size,
    memory_bytes,
    require_memory,
)
