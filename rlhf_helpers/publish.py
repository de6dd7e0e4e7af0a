"""Where the course is published, from one place: `pyproject.toml`.

    [project.urls]
    Repository = "https://github.com/OWNER/NAME"     # the slug: Colab badges and install cells point here
    [tool.rlhf-course]
    ref = "main"                                    # the branch, tag or commit they open and install

Every notebook's Colab badge and Colab-only install cell, and the README's badges and clone command, are derived
from those two settings. To publish under another name, or to pin a release (`ref = "v0.1.0"`, so that the notebook
a learner opens and the helpers it installs are the same version), edit them and run

    python -m rlhf_helpers.publish          # rewrites the badges and install cells
    python -m rlhf_helpers.publish --check  # exits 1 naming each place that disagrees (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"\\]+?/blob/[^)\s\"\\/]+/notebooks/"
                    r"(?P<name>[^)\s\"\\/]+\.ipynb)")
_INSTALL = re.compile(r"rlhf-helpers @ git\+https://github\.com/[^\"'\\\s]+")  # no quote, backslash or space
_CLONE = re.compile(r"git clone https://github\.com/\S+ && cd \S+")


@dataclass(frozen=True)
class Links:
    slug: str
    """OWNER/NAME on GitHub."""
    ref: str
    """Branch, tag or commit the badges open and the install cells install."""

    def badge(self, notebook: str) -> str:
        return f"https://colab.research.google.com/github/{self.slug}/blob/{self.ref}/notebooks/{notebook}"

    @property
    def install(self) -> str:
        suffix = "" if self.ref == "main" else f"@{self.ref}"
        return f"rlhf-helpers @ git+https://github.com/{self.slug}{suffix}"

    @property
    def clone(self) -> str:
        return f"git clone https://github.com/{self.slug} && cd {self.slug.split('/')[1]}"


def read_links(root: Path) -> Links:
    """The slug and ref from `root/pyproject.toml`."""
    import tomllib  # Python 3.11+: publishing is a maintainer's step, the course itself runs on 3.10

    config = tomllib.loads((root / "pyproject.toml").read_text())
    url = config["project"]["urls"]["Repository"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", url)
    if not match:
        raise ValueError(f"pyproject.toml [project.urls] Repository must be https://github.com/OWNER/NAME, got {url!r}")
    return Links(match.group(1), config.get("tool", {}).get("rlhf-course", {}).get("ref", "main"))


def _rewrite(text: str, links: Links) -> str:
    text = _BADGE.sub(lambda m: links.badge(m.group("name")), text)
    text = _INSTALL.sub(links.install, text)
    return _CLONE.sub(links.clone, text)


def problems(root: Path, links: Links | None = None) -> list[str]:
    """Each place whose badge, install cell or clone command disagrees with pyproject.toml, or whose badge names a
    notebook that does not exist."""
    links = links or read_links(root)
    found = []
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    names = {p.name for p in notebooks}
    for path in [*notebooks, root / "README.md"]:
        text = path.read_text()
        for m in _BADGE.finditer(text):
            if m.group("name") not in names:
                found.append(f"{path.name}: a badge opens notebooks/{m.group('name')}, which does not exist")
        if _rewrite(text, links) != text:
            found.append(f"{path.name}: a badge, install cell or clone command is not {links.slug}@{links.ref}")
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        first = "".join(cells[0]["source"]) if cells else ""
        if links.badge(path.name) not in first:
            found.append(f"{path.name}: its first cell has no Colab badge to itself")
        installs = [c for c in cells if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
        if len(installs) != 1 or links.install not in "".join(installs[0]["source"]):
            found.append(f"{path.name}: needs one Colab-only install cell installing {links.install!r}")
    return found


def publish(root: Path) -> list[Path]:
    """Rewrite every badge, install cell and clone command from pyproject.toml; returns the files changed."""
    links, changed = read_links(root), []
    for path in [*sorted((root / "notebooks").glob("*.ipynb")), root / "README.md"]:
        text = path.read_text()
        new = _rewrite(text, links)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.publish", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository (default: here)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything disagrees")
    args = parser.parse_args(argv)
    if not (args.root / "pyproject.toml").is_file():
        parser.error(f"{args.root} has no pyproject.toml: run this in the course's repository or pass --root.")
    if args.check:
        found = problems(args.root)
        for line in found:
            print(line)
        return 1 if found else 0
    for path in publish(args.root):
        print(f"updated {path.relative_to(args.root)}")
    remaining = problems(args.root)
    for line in remaining:
        print(line, file=sys.stderr)
    return 1 if remaining else 0


if __name__ == "__main__":
    raise SystemExit(main())
