"""The import contracts of setup.cfg (wings by layer, no circles, parts and commands apart):
`lint-imports` keeps them all on this tree, and breaks each when a copy of the package is
given an import that violates it (injected bugs)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = "Wings by layer (each imports only the wings below it)"
CIRCLES = "No import circles between the modules of any wing"
PARTS = "Priors, guides and likelihoods never import each other"
COMMANDS = "Each command is its own module"
# The console script's entry point, run by this interpreter (no PATH or bin/Scripts lookup).
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def source(root: Path, module: str) -> Path:
    return root / (module.replace(".", "/") + ".py")


def not_python(folder: str, names: list) -> list:
    """copytree's ignore: everything but package folders and .py files."""
    return [
        name
        for name in names
        if name == "__pycache__"
        or not (name.endswith(".py") or os.path.isdir(os.path.join(folder, name)))
    ]


def lint_imports(cwd: Path, into: str = "", target: str = ""):
    """Runs lint-imports with setup.cfg's contracts in cwd. With `into`, on a copy of the
    package made in cwd whose module `into` ends with `import target`, the copy first on
    PYTHONPATH so that grimp analyses it and not the installed package."""
    env = dict(os.environ)
    if into:
        shutil.copytree(ROOT / "pyro_vae", cwd / "pyro_vae", ignore=not_python)
        shutil.copy(ROOT / "setup.cfg", cwd / "setup.cfg")
        with source(cwd, into).open("a") as module:
            module.write(f"\nimport {target}  # injected\n")
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(cwd), env.get("PYTHONPATH")])
        )
    command = [sys.executable, "-c", LINT, "--no-cache", "--no-logo", "setup.cfg"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def verdicts(result: subprocess.CompletedProcess) -> dict:
    """{contract name: "KEPT" or "BROKEN"} from lint-imports' summary lines."""
    found = {}
    for line in result.stdout.splitlines():
        name, _, verdict = line.strip().rpartition(" ")
        if verdict in ("KEPT", "BROKEN"):
            found[name] = verdict
    return found


def test_the_tree_keeps_every_import_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result) == dict.fromkeys([WINGS, CIRCLES, PARTS, COMMANDS], "KEPT")
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    "into, target, broken, why",
    [
        # a part (a low wing) importing the training loop (a high wing)
        (
            "pyro_vae.parts.priors",
            "pyro_vae.run.train",
            WINGS,
            "pyro_vae.parts is not allowed to import pyro_vae.run:",
        ),
        # priors imports networks; networks importing priors closes a circle in parts
        (
            "pyro_vae.parts.networks",
            "pyro_vae.parts.priors",
            CIRCLES,
            "No cycles are allowed in pyro_vae.parts.",
        ),
        # a prior importing a guide
        (
            "pyro_vae.parts.priors",
            "pyro_vae.parts.guides",
            PARTS,
            "pyro_vae.parts.priors is not allowed to import pyro_vae.parts.guides:",
        ),
    ],
    ids=["upward", "circle", "prior-imports-guide"],
)
def test_an_injected_import_breaks_its_contract(tmp_path, into, target, broken, why):
    result = lint_imports(tmp_path, into, target)
    assert result.returncode != 0, result.stdout + result.stderr
    assert verdicts(result)[broken] == "BROKEN", result.stdout
    assert why in result.stdout, result.stdout
    # the injected line, the copy's last, is reported: grimp analysed the copy
    last = len(source(tmp_path, into).read_text().splitlines())
    assert f"{into} -> {target} (l.{last})" in result.stdout, result.stdout
