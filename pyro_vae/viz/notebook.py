"""Figures in a notebook: whether a Jupyter front end is there to show them, and showing one
inline as PNG bytes (``plots.save`` calls both, so every figure a tutorial draws appears in
its output as well as in its file)."""

import io
from pathlib import Path

from matplotlib.figure import Figure


def in_notebook() -> bool:
    """Whether the code runs under an IPython front end that shows PNG images (a Jupyter
    kernel; a terminal IPython shows text only)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "image/png" in shell.display_formatter.active_types


def show_inline(fig: Figure, path: Path, dpi: int = 110) -> None:
    """Show ``fig`` in the notebook's output as a PNG image: the file at ``path`` when it is
    one, else ``fig`` rendered at ``dpi``. The image is handed to IPython as PNG bytes, so it
    shows whatever matplotlib backend is selected (``display(fig)`` needs the inline backend's
    formatter, and under the Agg backend shows only ``<Figure size ...>``)."""
    from IPython.display import Image, display

    if path.suffix.lower() == ".png":
        data = path.read_bytes()
    else:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        data = buffer.getvalue()
    display(Image(data=data, format="png"))
