"""Shared fixtures: a seconds-long offline world (the profile default is set in ../conftest.py)."""

import pytest


@pytest.fixture(scope="session")
def fast_world(tmp_path_factory, worker_id):
    """The FAST recipe of the offline world (tiny budgets), built once per test run in a temp cache. Under xdist the
    workers share it: the first to ask builds it under the builder's lock, and the other waits for it and reuses it
    (tests/test_offline.py: concurrent builders build once)."""
    from rlhf_helpers.fixture import FIXTURE_DIR
    from rlhf_helpers.offline import FAST, build_offline_world

    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if worker_id != "master" else base) / "fast-world"  # the parent is this run's, shared
    return build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=cache, verbose=False)


@pytest.fixture(scope="session")
def tiny_ppo(fast_world):
    """A PPO state on the FAST world's policy (batch 8, minibatches of 4, 2 epochs) and one rollout of it, for the
    checkers that run a model. Checks may update it: they compare learner and reference from one snapshot."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_helpers import get_profile
    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.ppo_loop import collect_rollout, make_state, next_prompts

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy)
    reference = AutoModelForCausalLM.from_pretrained(fast_world.policy)
    config = dataclasses.replace(get_profile("smoke").ppo, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                                 gen_min_tokens=2, gen_max_tokens=4)
    reward = lambda texts: torch.tensor([float(len(t) % 3) - 1 for t in texts])  # noqa: E731
    state = make_state(config, policy, reference, tok, reward, [[10, 11, 12], [20, 21], [30, 31, 32, 33]])
    return state, collect_rollout(state, next_prompts(state))


REFERENCE_RUN = ["--algo", "ppo", "--profile", "smoke", "--steps", "6", "--batch-size", "16", "--mini-batch-size", "8",
                 "--no-progress"]
"""The short PPO run that the kill, Ctrl-C and full-disk tests each resume and compare against."""


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, smoke_world):
    """REFERENCE_RUN, uninterrupted, once per test process: (its folder, its summary, its arguments). It runs on the
    smoke world (`smoke_world`, ../conftest.py), so the tests that use it are marked slow."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run([sys.executable, "-m", "rlhf_helpers.train", *REFERENCE_RUN, "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), list(REFERENCE_RUN)
