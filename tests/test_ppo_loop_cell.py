"""Notebook 05's PPO step (the cell tagged `ppo-loop`, which trains the notebook's policy with the learner's
functions) and `ppo_loop.ppo_step` (which the headless runner trains with) are the same algorithm: from one starting
point, a few steps of each end with identical weights, identical optimizer state and identical logs."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_ppo_from_scratch.ipynb"


def loop_cell_namespace(**learner_functions) -> dict:
    """Execute the notebook's `ppo-loop` cell with the given learner functions in scope; returns its namespace."""
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if "ppo-loop" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, "notebook 05 must have exactly one cell tagged ppo-loop"
    from rlhf_helpers import ppo

    namespace = {"torch": torch, "ppo": ppo, **learner_functions}
    exec("".join(cells[0]["source"]), namespace)  # noqa: S102 - the notebook's own cell
    return namespace


def _states(fast_world, n: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_helpers import get_profile
    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.ppo_loop import make_state

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy)
    reference = AutoModelForCausalLM.from_pretrained(fast_world.policy)
    config = dataclasses.replace(get_profile("smoke").ppo, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                                 gen_min_tokens=2, gen_max_tokens=5, steps=3)
    reward = lambda texts: torch.tensor([len(t) % 5 - 2.0 for t in texts])  # noqa: E731 - varied, deterministic
    prompts = [[10, 11, 12], [20, 21], [30, 31, 32, 33], [40, 41]]
    return [make_state(config, copy.deepcopy(policy), reference, tok, reward, prompts) for _ in range(n)]


def _weights(state):
    return [p.detach().clone() for p in (*state.policy.parameters(), *state.value_head.parameters())]


def _logged(history):
    return [{k: v for k, v in record.items() if not k.startswith("time_")} for record in history]


def test_the_notebooks_ppo_step_trains_exactly_like_ppo_loop_train(fast_world):
    from rlhf_helpers import ppo_loop

    cell = loop_cell_namespace(rewards_and_advantages=ppo_loop.rewards_and_advantages,
                               ppo_update=ppo_loop.ppo_update, sequence_kl=ppo_loop.sequence_kl)
    by_cell, by_loop = _states(fast_world, 2)
    torch.manual_seed(0)
    ppo_loop.train(by_loop, progress=False)
    torch.manual_seed(0)
    ppo_loop.train(by_cell, progress=False, step=cell["ppo_step_by_hand"])

    assert by_cell.step == by_loop.step == 3
    for a, b in zip(_weights(by_cell), _weights(by_loop), strict=True):
        assert torch.equal(a, b)
    assert _logged(by_cell.history) == _logged(by_loop.history)
    assert by_cell.kl_ctl.value == by_loop.kl_ctl.value
    assert set(by_cell.history[0]) == set(by_loop.history[0])  # the same record, timings included
    assert any(not torch.equal(a, b) for a, b in zip(_weights(by_loop), _weights(_states(fast_world, 1)[0])))


@pytest.mark.parametrize("broken", ["rewards_and_advantages", "ppo_update", "sequence_kl"])
def test_the_cell_trains_with_the_learners_functions(fast_world, broken):
    """Swap one learner function for a wrong one: the cell's run changes, so it is the learner's code that trains."""
    from rlhf_helpers import ppo_loop

    wrong = {
        "rewards_and_advantages": lambda *args: tuple(-x for x in ppo_loop.rewards_and_advantages(*args)),
        "ppo_update": lambda state, rollout: {"policy_loss": 0.0},  # never steps the optimizer
        "sequence_kl": lambda *args: 100.0 + ppo_loop.sequence_kl(*args),
    }
    functions = {"rewards_and_advantages": ppo_loop.rewards_and_advantages, "ppo_update": ppo_loop.ppo_update,
                 "sequence_kl": ppo_loop.sequence_kl, broken: wrong[broken]}
    cell = loop_cell_namespace(**functions)
    right, wrong_state = _states(fast_world, 2)
    torch.manual_seed(0)
    ppo_loop.train(right, steps=2, progress=False)
    torch.manual_seed(0)
    ppo_loop.train(wrong_state, steps=2, progress=False, step=cell["ppo_step_by_hand"])
    assert _logged(wrong_state.history) != _logged(right.history)
