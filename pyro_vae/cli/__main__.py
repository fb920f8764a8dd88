"""``python -m pyro_vae.cli``: the ``pyro-vae`` command (also under torchrun)."""

import sys

from pyro_vae.cli import main

if __name__ == "__main__":
    sys.exit(main())
