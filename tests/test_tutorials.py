"""The tutorials run, in smoke mode, as the test suite's last word on their claims.

Each tutorial is executed in-process with ``runpy`` (sharing the already-imported torch and Pyro
keeps the whole module well under a minute and a half) from an empty temporary working directory,
with ``PYRO_VAE_SMOKE=1``. Its own assertions are the checks; here we require that it finishes and
that it wrote its figures. Global state a tutorial may change (default dtype, thread count, part
registries) is restored afterwards. One tutorial also runs as a notebook, in a Jupyter kernel
(jupytext, nbclient, ipykernel), where every figure it writes must also show inline, as a PNG
output, and no cell may echo a value.
"""

import ast
import base64
import os
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


# the calls a tutorial's code cell may end with: they return None, so the cell echoes nothing
SILENT_CALLS = ("print", "pyro.set_rng_seed")
NOTEBOOK = (
    "01_elbo_from_scratch.py"  # the tutorial executed as a notebook (the quickest)
)


@pytest.mark.parametrize("name", TUTORIALS)
def test_no_code_cell_ends_with_a_value_a_notebook_would_echo(name):
    notebook = jupytext.read(TUTORIALS_DIR / name)
    for cell in notebook.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        last = ast.parse(cell.source).body[-1]
        if isinstance(last, ast.Expr):
            called = isinstance(last.value, ast.Call) and ast.unparse(last.value.func)
            assert called in SILENT_CALLS, (
                f"{name}: a cell ends with '{ast.unparse(last)[:60]}', whose value a "
                f"notebook shows as Out[...]: assign it"
            )


def outputs_of(notebook) -> list:
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def run_as_notebook(path: Path, work: Path, monkeypatch):
    """Execute the jupytext file ``path`` as a notebook in a fresh Jupyter kernel (inline
    matplotlib backend, as in Jupyter), in smoke mode, from ``work``; returns the notebook.
    """
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("PYRO_VAE_SMOKE", "1")
    monkeypatch.delenv(
        "MPLBACKEND", raising=False
    )  # the kernel picks its inline backend
    root = str(TUTORIALS_DIR.parent)  # the kernel imports this checkout's pyro_vae
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    )
    notebook = jupytext.read(path)
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    ).execute()
    return notebook


@pytest.mark.slow  # (the quick tier stays under 3 minutes; CI runs it)
def test_a_tutorial_run_as_a_notebook_shows_each_figure_inline(tmp_path, monkeypatch):
    notebook = run_as_notebook(TUTORIALS_DIR / NOTEBOOK, tmp_path, monkeypatch)
    outputs = outputs_of(notebook)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    written = sorted((tmp_path / "figures").glob("*.png"))
    assert written and len(images) == len(written), (len(images), written)
    shown = {o["data"]["image/png"] for o in images}
    assert {base64.b64encode(p.read_bytes()).decode() for p in written} == shown
    echoes = [o for o in outputs if o["output_type"] in ("execute_result", "error")]
    assert echoes == [], echoes
    text = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    assert "<Figure size" not in text and "PosixPath(" not in text, text
