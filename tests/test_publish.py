"""The repository slug and ref live in pyproject.toml; every badge, install cell and clone command follows them."""

import json
import shutil
from pathlib import Path

from rlhf_helpers.publish import Links, problems, publish, read_links

ROOT = Path(__file__).resolve().parents[1]


def test_every_badge_and_install_cell_agrees_with_pyproject():
    assert problems(ROOT) == []
    links = read_links(ROOT)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert links.badge(notebook.name) in (ROOT / "README.md").read_text(), f"README badge for {notebook.name}"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    return root


def test_publishing_under_a_new_name_is_one_line_and_one_command(tmp_path):
    root = _copy(tmp_path)
    old = read_links(root)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f"https://github.com/{old.slug}",
                                                       "https://github.com/someone/rlhf-class")
                         .replace(f'ref = "{old.ref}"', 'ref = "v1.0.0"'))
    assert problems(root), "the copy disagrees until published"
    changed = publish(root)
    assert len(changed) == len(list((root / "notebooks").glob("*.ipynb"))) + 1
    assert problems(root) == []
    new = Links("someone/rlhf-class", "v1.0.0")
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        text = notebook.read_text()
        assert f"github.com/{old.slug}" not in text
        cells = json.loads(text)["cells"]
        assert new.badge(notebook.name) in "".join(cells[0]["source"])
        assert any(new.install in "".join(c["source"]) for c in cells if c["cell_type"] == "code")
    readme = (root / "README.md").read_text()
    assert f"github.com/{old.slug}" not in readme and new.clone in readme
    assert new.install == "rlhf-helpers @ git+https://github.com/someone/rlhf-class@v1.0.0"


def test_a_badge_to_a_missing_notebook_is_named(tmp_path):
    root = _copy(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("notebooks/08_dpo.ipynb)", "notebooks/07_dop.ipynb)"))
    assert any("07_dop.ipynb, which does not exist" in p for p in problems(root))
