"""MkDocs hooks: the pages generated from the repository at build time.

* **API reference**: one page per wing of ``pyro_vae`` (the wing's docstring, then a
  mkdocstrings ``:::`` block per public module), plus the top-level modules; the pages follow the
  package's files, so a new module shows up without editing a list.
* **Tutorials**: each ``tutorials/NN_*.py`` (jupytext percent format) rendered to Markdown by
  jupytext, unexecuted: its prose cells as text, its code cells as Python blocks.

Both sections are appended to ``nav`` in ``on_config``; the pages are added in ``on_files``.
``on_page_content`` turns the Sphinx roles of the docstrings (``:class:`Config```) into plain
code, as mkdocstrings renders them literally.
"""

import ast
import re
from pathlib import Path
from typing import Dict, List

import jupytext
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_vae"
TUTORIALS = ROOT / "tutorials"
TOP_LEVEL = ("api", "errors", "registry", "process")  # modules beside the wings


def wings() -> List[str]:
    """The sub-packages of ``pyro_vae`` that hold code (``configs`` holds TOML files)."""
    return sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def modules(wing: str) -> List[str]:
    """The public modules of a wing (not ``__init__``, ``__main__`` or ``_private``)."""
    return sorted(
        p.stem for p in (PACKAGE / wing).glob("*.py") if not p.stem.startswith("_")
    )


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def reference_pages() -> Dict[str, str]:
    """``reference/WING.md`` -> its Markdown, for every wing and the top-level modules."""
    pages = {}
    for wing in wings():
        blocks = [f"::: pyro_vae.{wing}.{m}" for m in modules(wing)]
        intro = docstring(PACKAGE / wing / "__init__.py")
        pages[f"reference/{wing}.md"] = "\n\n".join(
            [f"# pyro_vae.{wing}", intro, *blocks]
        )
    blocks = [f"::: pyro_vae.{m}" for m in TOP_LEVEL]
    pages["reference/top-level.md"] = "\n\n".join(
        ["# pyro_vae: the API and the bottom layer", docstring(PACKAGE / "__init__.py")]
        + blocks
    )
    return pages


def tutorial_pages() -> Dict[str, str]:
    """``tutorials/NN_name.md`` -> the tutorial rendered as Markdown (unexecuted)."""
    pages = {}
    for path in sorted(TUTORIALS.glob("[0-9][0-9]_*.py")):
        notebook = jupytext.read(path)
        notebook.metadata = {}
        text = jupytext.writes(notebook, fmt="md")
        source = f"\n\n*Source: `tutorials/{path.name}` (run it, or open it as a notebook).*\n"
        title_end = (
            text.index("\n") + 1
        )  # after the first line, the "# N. title" heading
        pages[f"tutorials/{path.stem}.md"] = (
            text[:title_end] + source + text[title_end:]
        )
    return pages


def title(markdown: str) -> str:
    return markdown.split("\n", 1)[0].lstrip("# ").strip()


def on_config(config):
    generated = ("API reference", "Tutorials")
    config["nav"] = [  # idempotent: mkdocs serve may hand a config back for a rebuild
        e
        for e in config["nav"]
        if not (isinstance(e, dict) and set(e) & set(generated))
    ]
    reference = reference_pages()
    config["nav"].append(
        {"API reference": [{title(md): uri} for uri, md in reference.items()]}
    )
    tutorials = [{title(md): uri} for uri, md in tutorial_pages().items()]
    config["nav"].append({"Tutorials": ["tutorials/index.md", *tutorials]})
    return config


def on_files(files, config):
    for uri, markdown in {**reference_pages(), **tutorial_pages()}.items():
        files.append(File.generated(config, uri, content=markdown))
    return files


ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(<code>)")


def on_page_content(html, page, config, files):
    html = ROLE.sub(r"\1", html)
    return html.replace("<p>::</p>", "")
