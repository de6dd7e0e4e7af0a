"""The exercises in the notebooks: tagged, enough of them, each with a checker, and each shown solution passes it."""

import json
import re
from pathlib import Path

import pytest
import torch

from rlhf_helpers import exercises, ppo

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _exercises(path):
    """(stub source, the markdown cell after it) for every cell tagged `exercise`."""
    cells = _cells(path)
    return [("".join(c["source"]), "".join(cells[i + 1]["source"]) if i + 1 < len(cells) else "")
            for i, c in enumerate(cells) if "exercise" in c.get("metadata", {}).get("tags", [])]


def test_every_notebook_has_exercises_and_there_are_at_least_15():
    counts = {p.name: len(_exercises(p)) for p in NOTEBOOKS}
    assert all(n >= 1 for n in counts.values()), counts
    assert sum(counts.values()) >= 15, counts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_exercise_is_a_stub_with_a_checker_and_a_folded_solution(path):
    for stub, after in _exercises(path):
        name = re.search(r"def (my_\w+)\(", stub)
        assert name, f"an exercise cell of {path.name} defines no my_* stub:\n{stub[:200]}"
        assert "raise NotImplementedError" in stub and "# YOUR CODE HERE" in stub, name.group(1)
        checker = re.search(r"\b(check_\w+)\(" + name.group(1), stub)
        assert checker and hasattr(exercises, checker.group(1)), f"{name.group(1)}: no known checker is called"
        assert after.startswith("<details>") and "Solution" in after and f"def {name.group(1)}(" in after, \
            f"{path.name}: the cell after {name.group(1)} must be its folded solution"


def _solutions():
    for path in NOTEBOOKS:
        for stub, after in _exercises(path):
            name = re.search(r"def (my_\w+)\(", stub).group(1)
            checker = re.search(r"\b(check_\w+)\(" + name, stub).group(1)
            code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
            yield pytest.param(name, checker, code, id=f"{path.stem[:2]}-{name}")


@pytest.mark.parametrize("name, checker, code", list(_solutions()))
def test_the_shown_solution_passes_its_checker(name, checker, code, tiny_ppo, capsys):
    from rlhf_helpers.ppo_loop import select_rows, forward_logprobs_values

    namespace = {"torch": torch, "ppo": ppo, "forward_logprobs_values": forward_logprobs_values,
                 "select_rows": select_rows}
    exec(code, namespace)  # noqa: S102 - the notebook's own solution text
    state, rollout = tiny_ppo
    extra = {"check_response_logits": (state.policy, rollout.batch), "check_ppo_update": (state, rollout)}
    with torch.no_grad() if checker == "check_response_logits" else torch.enable_grad():
        returned = getattr(exercises, checker)(namespace[name], *extra.get(checker, ()))
    assert returned is namespace[name]
    assert "✅" in capsys.readouterr().out
