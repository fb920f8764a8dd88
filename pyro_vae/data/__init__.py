"""Data sets: train/test (and optional validation) rows, flat, float32 in [0, 1].

Every data set is one function registered in ``registry.DATASETS`` that turns a
``config.DataConfig`` into a ``Dataset`` (``dataset``): the built-in ``digits``,
``binarized-mnist`` and ``mnist`` (``builtin``), the user's ``array`` files and ``images``
folders (``user``). ``record`` writes and reads where a run's data came from (``data.json``).
Importing this wing registers the built-in sets.

May import: the bottom layer (``config``, ``errors``, ``registry``, ``process``).
"""

from pyro_vae.data import builtin, user  # noqa: E402,F401  (registers the data sets)
from pyro_vae.data.dataset import (  # noqa: F401  (the public names of the wing)
    FROM_PYTHON,
    Dataset,
    as_rows,
    drawn_as,
    example_shape,
    from_splits,
    grey_scale,
    load,
    seeded_split,
    value_range,
)
from pyro_vae.data.inputs import as_array  # noqa: F401
from pyro_vae.data.labels import check_labels  # noqa: F401
from pyro_vae.data.python import from_arrays  # noqa: F401
