"""Every exercise's function is what its notebook then uses: swap the learner's function for a deliberately wrong one
and a later cell's output changes (or the cell stops).

Each notebook runs once, in this process, cell by cell (stdout, displayed objects and each cell's last expression are
its output), up to the last cell that uses an exercise's function. Just before each exercise cell a copy of the
notebook's variables and random state is kept; afterwards each copy runs on from its exercise with the checker
handing back a wrong function (`WRONG` below) instead of the reference, until a later cell's output differs from
the run with the right function; a second copy runs the exercise's shown solution through the first cell that uses
it, which must not fail. Cells that train come after these uses, so nothing here trains a policy.

What is tested is the wiring, not the results, so notebooks 07 and 08 run here on fewer preference pairs than the
lesson needs (`FEWER_PAIRS`): their pairs and reward models are most of the time these tests take.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # runs each notebook's cells, which load the smoke world

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _minus_loss(ref):
    def wrong(*args):
        loss, stats = ref(*args)
        return -loss, stats
    return wrong


# name the checker's result is bound to -> (what the reference does) -> a plausible mistake with the same signature
WRONG = {
    "positive_label_index": lambda ref: lambda config, positive_label="POSITIVE": 1 - ref(config, positive_label),
    "sft_loss": lambda ref: lambda logits, ids, mask: ref(logits, ids, torch.ones_like(mask)),  # counts the prompt
    "response_logits": lambda ref: lambda model, batch: ref(model, batch).roll(1, dims=1),  # off by one column
    "position_ids_from_mask": lambda ref: lambda mask: torch.arange(mask.shape[1]).expand(mask.shape),  # from col 0
    "kl_estimate": lambda ref: lambda logprobs, ref_logprobs, kind: ref(ref_logprobs, logprobs, kind),  # swapped
    "clipped_policy_loss": _minus_loss,  # the missing minus sign
    "per_token_rewards": lambda ref: lambda scores, lp, ref_lp, mask, coef: ref(scores, lp, ref_lp, mask, coef)
    + scores[:, None] * mask,  # the score on every token, not only the last
    "compute_gae": lambda ref: lambda rewards, values, mask, gamma, lam: ref(rewards, values, mask, gamma, 0.0),
    "clipped_value_loss": lambda ref: lambda values, old, returns, mask, eps: ref(values, old, returns, mask, 1e9),
    "masked_whiten": lambda ref: lambda x, mask, *a, **k: (x - x.mean()) / x.std(),  # padding in the statistics
    "kl_update": lambda ref: lambda coef, kl, target, n, horizon: ref(coef, target, kl, n, horizon),  # swapped
    "rewards_and_advantages": lambda ref: lambda *args: tuple(-x for x in ref(*args)),
    "ppo_update": lambda ref: lambda state, rollout: {"policy_loss": 0.0, "value_loss": 0.0},  # never steps
    "sequence_kl": lambda ref: lambda logprobs, ref_logprobs, mask: ((logprobs - ref_logprobs)).sum(1).mean().item(),
    "group_relative_advantages": lambda ref: lambda r, g: (r.view(-1, g) - r.view(-1, g).mean(1, keepdim=True))
    .reshape(-1),  # not divided by the group's std
    "leave_one_out_advantages": lambda ref: lambda r, g: (r.view(-1, g) - r.view(-1, g).mean(1, keepdim=True))
    .reshape(-1),  # the baseline includes the sample itself
    "bradley_terry_loss": lambda ref: lambda chosen, rejected: ref(rejected, chosen),  # chosen and rejected swapped
    "dpo_loss_from_tokens": lambda ref: lambda pc, pr, rc, rr, cm, rm, beta: ref(pr, pc, rr, rc, rm, cm, beta),
}


def _fewer_overoptimization_pairs(monkeypatch):
    import dataclasses

    from rlhf_helpers import overoptimization

    monkeypatch.setattr(overoptimization, "SMOKE", dataclasses.replace(
        overoptimization.SMOKE, n_pairs=512, n_heldout_pairs=64, weak_rm_pairs=128))


def _fewer_dpo_pairs(monkeypatch):
    from rlhf_helpers import dpo

    monkeypatch.setattr(dpo, "dpo_pair_count", lambda config: 640)  # 40 by-hand steps: the first and last 20 apart


FEWER_PAIRS = {"07": _fewer_overoptimization_pairs, "08": _fewer_dpo_pairs}
"""notebook number -> what shrinks its preference pairs for these tests (4,096 -> 512 in 07, 1,280 -> 640 in 08)."""

_BINDING = re.compile(r"^(\w+) = (check_\w+)\((my_\w+)", re.M)


def _solution(cells, index: int) -> str:
    """The folded solution's code: the ```python block of the markdown cell after the exercise."""
    match = re.search(r"```python\n(.*?)```", "".join(cells[index + 1]["source"]), re.S)
    assert match, f"no ```python solution after exercise cell {index}"
    return match.group(1)


def _exercises(cells):
    """(cell index, bound name, checker) of every cell tagged `exercise`."""
    found = []
    for i, cell in enumerate(cells):
        if "exercise" in cell["metadata"].get("tags", []):
            match = _BINDING.search("".join(cell["source"]).replace("    ", ""))
            assert match, f"exercise cell {i} binds no `name = check_...(my_...)`"
            found.append((i, match.group(1), match.group(2)))
    return found


def _display(outputs):
    return lambda *objects: outputs.extend(repr(o) for o in objects)


def _run_cell(source: str, namespace: dict) -> str:
    """Execute one notebook cell; its output is stdout, displayed reprs and the last expression's repr."""
    import matplotlib.pyplot as plt

    shown: list[str] = []
    namespace["display"] = _display(shown)
    out = io.StringIO()
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the notebook's own cells
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307
                if value is not None:
                    shown.append(repr(value))
    except Exception as err:  # noqa: BLE001 - a cell that stops is an output too
        shown.append(f"{type(err).__name__}: {err}")
        namespace["_cell_failed"] = True
    finally:
        shown.extend(_figure_data(plt))
        plt.close("all")
    return out.getvalue() + "\n".join(shown)


def _figure_data(plt) -> list[str]:
    """What the cell's figures show, as text: every line's y values and every bar's height, rounded."""
    drawn = []
    for number in plt.get_fignums():
        for ax in plt.figure(number).axes:
            for line in ax.get_lines():
                try:
                    drawn.append(repr(np.round(np.asarray(line.get_ydata(), dtype=float), 4).tolist()))
                except (TypeError, ValueError):
                    drawn.append(repr(line.get_ydata()))
            drawn.append(repr([round(float(p.get_height()), 4) for p in ax.patches if hasattr(p, "get_height")]))
            drawn.append(ax.get_title())
    return drawn


def _fork(namespace: dict) -> dict:
    """A copy of the notebook's variables (shared objects stay shared); what cannot be copied is kept by reference."""
    memo, forked = {}, {}
    for key, value in namespace.items():
        try:
            forked[key] = copy.deepcopy(value, memo)
        except Exception:  # noqa: BLE001 - modules, pipelines, generators of other libraries
            forked[key] = value
    return forked


def _rng():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng(state):
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _uses(name: str, source: str) -> bool:
    return re.search(rf"\b{name}\b", source) is not None


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem[:2])
def test_a_wrong_learner_function_changes_a_later_output(path, monkeypatch):
    from rlhf_helpers import exercises

    if path.stem[:2] in FEWER_PAIRS:
        FEWER_PAIRS[path.stem[:2]](monkeypatch)
    cells = json.loads(path.read_text())["cells"]
    found = _exercises(cells)
    assert found, f"{path.name} has no exercise"
    sources = ["".join(c["source"]) if c["cell_type"] == "code" else None for c in cells]
    last_use = {i: max((j for j in range(i + 1, len(cells)) if sources[j] and _uses(name, sources[j])), default=None)
                for i, name, _ in found}
    for i, name, _ in found:
        assert last_use[i] is not None, f"{path.name}: no cell after the exercise uses `{name}`"
        assert name in WRONG, f"add a wrong version of `{name}` to WRONG"
    stop = max(last_use.values())

    baseline, forks = {}, {}
    namespace = {"__name__": "__main__"}
    for index in range(stop + 1):
        if sources[index] is None:
            continue
        if any(i == index for i, _, _ in found):  # keep copies of the notebook as it is just before the exercise
            forks[index] = (_fork(namespace), _fork(namespace), _rng())
        baseline[index] = _run_cell(sources[index], namespace)
        assert not namespace.pop("_cell_failed", False), \
            f"{path.name}: cell {index} fails with the course's own functions:\n{baseline[index][-1500:]}"
    del namespace

    for index, name, checker in found:  # the same notebook from the exercise on, with the learner's function wrong
        forked, solved, rng = forks.pop(index)
        real_checker = getattr(exercises, checker)
        monkeypatch.setattr(exercises, checker,
                            lambda fn, *args, _real=real_checker, _name=name: WRONG[_name](_real(fn, *args)))
        _set_rng(rng)
        changed = None
        for later in range(index, last_use[index] + 1):
            if sources[later] is not None and _run_cell(sources[later], forked) != baseline[later] and later > index:
                changed = later
                break
        assert changed, (f"{path.name}: with a wrong `{name}` no later cell's output changed "
                         f"(cells {index + 1}..{last_use[index]}): the notebook does not use the learner's function")

        # The shown solution, filled in as a learner would, must also carry the notebook through the first later cell
        # that uses it: a signature the notebook calls differently (a keyword the stub does not name) fails here,
        # while CI's empty stubs would never notice.
        exec(_solution(cells, index), solved)  # noqa: S102 - the notebook's own solution text
        solution = solved[re.search(r"def (my_\w+)\(", sources[index]).group(1)]
        monkeypatch.setattr(exercises, checker,
                            lambda fn, *args, _real=real_checker, _fn=solution: _real(_fn, *args))
        _set_rng(rng)
        first_use = min(j for j in range(index + 1, last_use[index] + 1) if sources[j] and _uses(name, sources[j]))
        for later in range(index, first_use + 1):
            if sources[later] is not None:
                text = _run_cell(sources[later], solved)
                assert not solved.pop("_cell_failed", False), \
                    f"{path.name}: with the shown solution of `{name}`, cell {later} fails:\n{text[-1500:]}"
        monkeypatch.setattr(exercises, checker, real_checker)
        del forked, solved
