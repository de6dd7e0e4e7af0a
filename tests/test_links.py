"""The documentation holds together: every relative link resolves, and the README stays a landing page.

Checked files: README.md, docs/*.md, benchmarks/README.md and notebooks/GLOSSARY.md. A relative link `[text](path)`
must name an existing file or folder, relative to the linking file's folder; `[text](path#anchor)` and `(#anchor)`
into a markdown file must also name one of its headings, slugged as GitHub does. http(s) and mailto links are not
followed. README.md has at most 150 lines and no commit hash: measurements with their commits live in
benchmarks/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
        ROOT / "notebooks" / "GLOSSARY.md"]
README_MAX_LINES = 150

TARGET = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
"""The target of an inline link or image: `[text](target)`, `[text](target "title")`, `![alt](target)`."""
HASH = re.compile(r"\b[0-9a-f]{7,40}\b")


def _unfenced(text: str) -> str:
    """The markdown without fenced code blocks (lines kept, so line numbers stay right)."""
    return re.sub(r"(?ms)^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", lambda m: "\n" * m.group().count("\n"), text)


def _prose(text: str) -> str:
    """The markdown without code blocks and inline code: where links are."""
    return re.sub(r"`[^`\n]*`", "", _unfenced(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lowercased, punctuation dropped except hyphens and
    underscores, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in `path`, with GitHub's -1, -2, … for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    for line in _unfenced(path.read_text()).splitlines():
        m = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    """Each relative link in `path` that names no file, or no heading of the markdown file it points into."""
    broken = []
    for number, line in enumerate(_prose(path.read_text()).splitlines(), 1):
        for target in TARGET.findall(line):
            if not target or re.match(r"(?i)(https?:|mailto:)", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / unquote(file)).resolve() if file else path
            where = f"{_shown(path)}:{number}: ({target})"
            if not dest.exists():
                broken.append(f"{where} names {_shown(dest)}, which does not exist")
            elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
                broken.append(f"{where}: {_shown(dest)} has no heading with the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    broken = broken_links(path)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## The `gpu` profile, projected (not measured)\n\n"
                                   "## Reward–KL (`x.py`)\n## Same\n## Same\n"
                                   "```bash\n# not a heading\n[x](missing.md)\n```\n")
    good = tmp_path / "good.md"
    good.write_text("[a](a.md) [b](a.md#the-gpu-profile-projected-not-measured) [c](a.md#rewardkl-xpy) "
                    "[d](a.md#same-1) [e](#top) [f](https://example.com/nothing) [g](mailto:x@y.z) `[h](nope.md)`\n"
                    "# Top\n")
    assert broken_links(good) == []
    bad = tmp_path / "bad.md"
    bad.write_text("[a](nope.md) and [b](a.md#not-a-heading) and [c](a.md#not-a-heading-either \"title\")\n")
    assert len(broken_links(bad)) == 3


def test_readme_is_a_landing_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, (f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move "
                                            "detail to docs/ and measurements to benchmarks/README.md")
    hashes = [f"line {i}: {m.group()}" for i, line in enumerate(lines, 1) for m in HASH.finditer(line)
              if re.search(r"\d", m.group()) and re.search(r"[a-f]", m.group())]
    assert not hashes, "README.md names commits (measurements with commits go to benchmarks/README.md):\n" + \
        "\n".join(hashes)
