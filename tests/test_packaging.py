"""The repository's promises: one install, one test command, clean notebooks, a course structure."""

import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_pyproject_lists_the_course_stack():
    deps = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert {"torch", "transformers", "trl", "datasets", "accelerate", "matplotlib", "ipywidgets", "pandas",
            "tqdm"} <= deps
    dev = {_name(r) for r in _pyproject()["project"]["optional-dependencies"]["dev"]}
    assert {"pytest", "nbmake", "ruff", "jupyterlab"} <= dev
    reqs = " ".join(_pyproject()["project"]["dependencies"])
    assert "transformers>=5" in reqs and "trl>=1.13" in reqs


def test_environment_yml_installs_exactly_the_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_steps = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_steps == [["-e .[dev]"]], "the pip step must install this repo with its dev extra, nothing else"
    # Conda itself provides only the interpreter and pip, so no package list can drift from pyproject.
    assert sorted(_name(d) for d in conda) == ["pip", "python"]
    py = next(d for d in conda if d.startswith("python"))
    minimum = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, py.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"### {title}", 1)[1]
    return re.search(r"```(?:bash)?\n(.*?)```", section, re.DOTALL).group(1)


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    install = [ln for ln in _readme_block("Set up").splitlines() if ln.startswith("pip install")]
    assert install, "README's set-up block has a pip install line"
    for line in install:
        assert "python -m " + line in ci, f"{line!r} is not what .ci/run installs"
    test = [ln for ln in _readme_block("Test").splitlines() if ln.strip() and not ln.startswith("#")]
    assert test == ["pytest"], test
    assert re.search(r"^python -m pytest\b", ci, re.MULTILINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                f"{path.name} has stored outputs: clear them (Jupyter: Edit > Clear Outputs of All Cells)"
    # nbformat 4.5 gives every cell an id; a cell added by a script without one makes nbformat warn on every read
    ids = [cell.get("id") for cell in nb["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: a cell lacks an id or shares one (nbformat.validate)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_the_course_frame(path):
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells)
    first = "".join(cells[0]["source"])
    assert first.startswith("# "), "title first"
    assert "colab.research.google.com/github" in first and path.name in first, "Colab badge to itself"
    assert "What you will learn" in first and "Runtime" in first
    assert "google.colab" in text, "Colab-only install cell"
    assert "set_seed(" in text, "seed cell"
    assert "get_profile(" in text and "describe()" in text, "prints the profile and models"
    last = "".join(cells[-1]["source"])
    assert "Recap" in last and "try" in last.lower()
    assert "trust_remote_code" not in text and not re.search(r"hf_[A-Za-z0-9]{20,}", text)


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("01_")


def test_code_and_notebooks_pass_ruff():
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    assert ruff, "ruff is part of the dev extra: pip install -e '.[dev]'"
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
