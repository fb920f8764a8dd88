"""The tutorials run, in smoke mode, as the test suite's last word on their claims.

Each tutorial is executed in-process with ``runpy`` (sharing the already-imported torch and Pyro
keeps the whole module well under a minute and a half) from an empty temporary working directory,
with ``PYRO_VAE_SMOKE=1``. Its own assertions are the checks; here we require that it finishes and
that it wrote its figures. Global state a tutorial may change (default dtype, thread count, part
registries) is restored afterwards.
"""

import runpy
from pathlib import Path

import jupytext
import matplotlib.pyplot as plt
import pytest
import torch

from pyro_vae import registry
from pyro_vae.registry import load_library_parts

TUTORIALS_DIR = Path(__file__).resolve().parents[1] / "tutorials"
TUTORIALS = sorted(p.name for p in TUTORIALS_DIR.glob("[0-9][0-9]_*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REGISTRIES = (
    registry.PRIORS,
    registry.GUIDES,
    registry.LIKELIHOODS,
    registry.OBJECTIVES,
)


def test_there_are_eight_tutorials_and_the_readme_lists_them():
    assert len(TUTORIALS) == 8, TUTORIALS
    readme = (TUTORIALS_DIR / "README.md").read_text()
    for name in TUTORIALS:
        assert name in readme, f"tutorials/README.md does not list {name}"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_is_a_percent_notebook(name):
    notebook = jupytext.read(TUTORIALS_DIR / name)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and notebook.cells[0].source.startswith(
        f"# {int(name[:2])}."
    )
    assert kinds.count("code") >= 3 and kinds.count("markdown") >= 3


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty working directory, smoke mode, one thread, and global state restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_VAE_SMOKE", "1")
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    load_library_parts()  # import pyro_vae is lazy: register before the snapshot
    parts = [dict(r._factories) for r in REGISTRIES]
    torch.set_num_threads(1)  # small networks: threads only contend with each other
    yield tmp_path
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
    for r, factories in zip(REGISTRIES, parts):
        r._factories = factories
    plt.close("all")


@pytest.mark.slow
@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_in_smoke_mode(name, isolated):
    runpy.run_path(str(TUTORIALS_DIR / name), run_name="__main__")
    figures = sorted((isolated / "figures").glob(f"{name[:2]}_*.png"))
    assert figures, f"{name} wrote no figures/{name[:2]}_*.png"
    for figure in figures:
        assert figure.read_bytes()[:8] == PNG_MAGIC, f"{figure.name} is not a PNG"
