"""Prose is computed: no measured number is typed into a notebook's markdown.

A number in a markdown cell is allowed only where it cannot go stale: a setting (`ε = 0.2`), a formula, a
section or notebook number, a citation (a year, a figure, an issue), or a phrase listed in ALLOWED with the reason
it is not a measurement of the learner's run. Everything else — a reward, a KL, an accuracy, a count of this run —
belongs in the output of the cell that measured it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

NUMBER = re.compile(r"(?<![\w.#/])[-−+]?\d+(?:[.,]\d+)*(?:\s?%)?(?![\w])")

UNIT_AFTER = re.compile(r"\s*(?:nats?|s|sec|seconds?|min|minutes?|h|×)(?![\w])")


def looks_measured(number: str, after: str) -> bool:
    """A signed number, a decimal, a percentage, or a count of nats, of time, or a factor."""
    return bool(re.match(r"[-−+]\d", number) or re.search(r"\d\.\d", number) or number.endswith("%")
                or UNIT_AFTER.match(after))


"""What a measurement looks like: integers alone are mostly counts the course set (4–16 tokens, 30 steps, exercise
3), so only these shapes are flagged; an integer measured on the run still must not be typed (the reviews read
it), and most come with a decimal or a sign beside them."""

AUTO = [
    (r"(?:=|≤|≥|<|>|±)\s*$", "a setting or a bar: `name = value`"),
    (r"(?:notebooks?|Notebooks?|section|Section|sections|Figure|Fig\.|Table|Eq\.|issue|PR|step|Step)\s*#?\s*"
     r"(?:\d+[–-])?$", "a reference to a notebook, section, figure, table or issue"),
]
"""(pattern that the text just before a number matches, why that number is allowed)."""

RUNTIME_ROW = re.compile(r"^\|.*\|.*(?:est\.|estimate|projected|on a 2-core laptop CPU \(a timing, not a result|"
                         r"measured (?:by CI|in a cold-cache\s+)\s*on 2 CPU cores,[^|]*?\b20\d\d-\d\d-\d\d)")
"""A row of a notebook's runtime table: an estimate, or a timing labelled as one, on the learner's kind of machine
(every notebook states its runtime per profile; a timing is not a result of the lesson; how and where it was measured
is in benchmarks/README.md)."""
BOOKKEEPING = re.compile(r"\bCI\b|\.ci/run|cold-cache|\bAMD\b|\bIntel\b|EPYC|Xeon|\bAVX"
                         r"|\b20\d\d-\d\d-\d\d\b|\bcommit\b")
"""Words that belong in benchmarks/README.md, not in a lesson: CI, a CPU model or vector unit, a date, a commit."""

ALLOWED = {
    "*": [
        ("GPT-2", "a model's name"), ("124M", "GPT-2's size (a citation)"), ("355M", "RoBERTa-large's size"),
        ("774M", "GPT-2-large's size"), ("k1", "an estimator's name"), ("k3", "an estimator's name"),
        ("(est.", "an estimate, labelled"), ("estimate", "an estimate, labelled"),
        ("2 CPU cores", "the smoke profile's machine"), ("H100", "a GPU's name"), ("H200", "a GPU's name"),
        ("V100", "a GPU's name"), ("T4", "a GPU's name"),
        ("95 % interval", "the course's confidence level, a setting"),
        ("4.3 standard errors", "Student's t at two degrees of freedom, a constant of the rule"),
    ],
    "06": [("version 1.13", "the TRL release that removed PPOTrainer (a citation)")],
    "07": [('with probability 0.8", does a win 80 % of the time', "an illustration of what calibration means")],
}
"""notebook prefix ("01") or "*" -> [(phrase, reason)]: numbers inside the phrase are not measurements."""


def strip_non_prose(text: str) -> str:
    """Markdown without code, math, link targets and HTML tags: the prose a learner reads as claims."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"<[^>]+>", " ", text)


def _cited(line: str, start: int, end: int) -> bool:
    """Inside a parenthesis that cites a paper (an "et al." or a year), or the number is a year."""
    number = line[start:end]
    if re.fullmatch(r"(?:19|20)\d\d", number):
        return True
    opening, closing = line.rfind("(", 0, start), line.find(")", end)
    if opening >= 0 and closing >= 0 and ")" not in line[opening:start]:
        inside = line[opening:closing]
        return bool(re.search(r"et al\.|(?:19|20)\d\d|Figure|Table|issue #|PR #", inside))
    return False


def measured_numbers(text: str, notebook: str) -> list[str]:
    """The numbers in `text` (a markdown cell) that the lint does not recognise as settings, citations or
    references: each as 'number in «context»'."""
    allowed = [p for key in ("*", notebook) for p, _ in ALLOWED.get(key, [])]
    found = []
    for line in strip_non_prose(text).splitlines():
        if line.lstrip().startswith("#"):
            line = re.sub(r"^\s*#+\s*\d*\.?", "", line)  # the section number of a heading
        if RUNTIME_ROW.search(line):
            continue
        covered = [(m.start(), m.end()) for p in allowed for m in re.finditer(re.escape(p), line)]
        for m in NUMBER.finditer(line):
            if not looks_measured(m.group(), line[m.end():m.end() + 9]):
                continue
            if any(a <= m.start() and m.end() <= b for a, b in covered):
                continue
            before = line[max(0, m.start() - 12):m.start()]
            if any(re.search(pattern, before) for pattern, _ in AUTO) or _cited(line, m.start(), m.end()):
                continue
            if re.search(r"[–-]\s*$", before) and re.search(r"(?:notebooks?|Notebooks?)\s*\d+\s*[–-]\s*$", before):
                continue
            found.append(f"{m.group()} in «{line[max(0, m.start() - 40):m.end() + 30].strip()}»")
    return found


def test_the_lint_finds_a_typed_reading_and_passes_settings_and_citations():
    found = measured_numbers("PPO lifts the positive rate from 0.34 to 0.98 at 28.5 nats in 52 % of 40 s.", "05")
    assert [hit.split(" in ")[0] for hit in found] == ["0.34", "0.98", "28.5", "52 %", "40"]
    labelled = "| `smoke` | ≈ 21 s (measured in a cold-cache `.ci/run` on 2 CPU cores, AMD EPYC (AVX2), 2026-12-03) |"
    assert measured_numbers(labelled, "01") == []  # a runtime row with its machine and date
    assert measured_numbers("| `smoke` | ≈ 21 s once the models are cached |", "01") != []  # a bare timing
    learner = "| `smoke` | ≈ 21 s on a 2-core laptop CPU (a timing, not a result: yours will differ) |"
    assert measured_numbers(learner, "01") == []  # a runtime row as a learner needs it
    assert measured_numbers("With ε = 0.2 (Schulman et al. 2017, Figure 2) as in notebook 04; `lr=1e-5`; $\\beta_0"
                            " = 0.1$.\n## 3. The loss", "05") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_measured_number_in_markdown(path):
    cells = json.loads(path.read_text())["cells"]
    found = [f"cell {i}: {hit}" for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
             for hit in measured_numbers("".join(cell["source"]), path.name[:2])]
    assert not found, (f"{path.name} types {len(found)} number(s) into markdown that look measured. Print them "
                       f"from the run in the cell after the result, or, for a setting or a citation, add the phrase "
                       f"to ALLOWED with its reason:\n" + "\n".join(found))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_notebooks_speak_to_learners_not_to_ci(path):
    cells = json.loads(path.read_text())["cells"]
    found = [f"cell {i}: «{line.strip()[:120]}»" for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
             for line in "".join(cell["source"]).splitlines() if BOOKKEEPING.search(line)]
    assert not found, (f"{path.name} speaks of CI, a CPU model, a date or a commit in its markdown; that belongs in "
                       f"benchmarks/README.md:\n" + "\n".join(found))


def test_the_bookkeeping_check_finds_ci_words():
    assert BOOKKEEPING.search("measured in a cold-cache `.ci/run` on AMD EPYC (AVX2), 2026-12-03")
    assert not BOOKKEEPING.search("≈ 21 s on a 2-core laptop CPU; notebook 07 with 4 epochs")
