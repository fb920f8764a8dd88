"""``pyro-vae``: one module per command (``train``, ``evaluate`` and ``sample``, ``check``,
``list``), and ``main``, the parser and the error handling around them. The commands import
torch and Pyro inside their functions, so ``pyro-vae --help`` answers at once.

May import: every wing.
"""

from pyro_vae.cli.app import main  # noqa: F401  (the console script's entry point)
