"""The documentation site (``mkdocs.yml``, ``docs/``) builds in strict mode, offline: any
warning (a broken link, a page missing from the nav, a docstring mkdocstrings cannot render)
fails the build. Needs the docs extra (mkdocs, mkdocstrings[python]); skipped without it.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(SPEC)  # docs/hooks.py: the generated pages
SPEC.loader.exec_module(hooks)
DEAD = "http://127.0.0.1:9"  # a proxy that refuses every connection: the build must not need one


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``, with the network cut off."""
    env = dict(os.environ, PYTHONPATH=str(config.parent))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env[name] = DEAD
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
    return subprocess.run(
        [*command, "-d", str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.slow  # (the quick tier stays under 3 minutes; CI runs it)
def test_the_site_builds_strictly_offline_with_every_module_and_tutorial(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    site = tmp_path / "site"
    for page in (
        "getting-started",
        "journeys/cli",
        "journeys/python",
        "journeys/own-data",
    ):
        assert (site / page / "index.html").is_file(), page
    assert (site / "journeys/scaling-out/index.html").is_file()
    for wing in hooks.wings():
        html = (site / "reference" / wing / "index.html").read_text()
        for module in hooks.modules(wing):
            assert f'id="pyro_vae.{wing}.{module}"' in html, f"{wing}.{module}"
        assert ":class:" not in html and ":func:" not in html
    html = (site / "reference/run/index.html").read_text()
    assert 'id="pyro_vae.run.train.fit"' in html and "the SVI loop" in html
    tutorials = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
    assert len(tutorials) == 8
    for path in tutorials:
        html = (site / "tutorials" / path.stem / "index.html").read_text()
        code_cells = sum(c.cell_type == "code" for c in jupytext.read(path).cells)
        assert html.count('<div class="highlight">') == code_cells, path.name
        assert f"<code>tutorials/{path.name}</code>" in html, path.name


@pytest.mark.slow
def test_the_strict_build_fails_on_a_broken_link(tmp_path):
    """The net: the same site with one link to a page that does not exist is refused."""
    for name in ("pyro_vae", "tutorials"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [the missing page](missing.md).\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and "missing.md" in result.stderr, result.stderr[
        -3000:
    ]
