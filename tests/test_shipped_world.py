"""The smoke world shipped in the repository: tied to its recipe, small, and as good as its record says, measured
again here on this machine."""

import json
import os
import time

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_helpers.offline import SHIPPED_WORLD, _texts, _verified_world, smoke_world
from rlhf_helpers.world import (PARTS, WorldConfig, WriterProbe, calibrate_gold, judged_reviews, part_key,
                                stored_predictions)

MAX_MB = 30
GOALS = {"classifier": 0.86, "gold": 0.88}
"""The issue's bars: the reward classifier and the gold judge on 2,000 IMDB test reviews."""
UNSEEN_LIMIT = 6.0
"""The policy's unseen-word rate, at most this many times real review text's. The issue's goal is 3x; the policy's
curve (rate against training tokens, benchmarks/README.md "Round 2") flattened and the build stopped at 5.5x, so this
guards the level that was shipped rather than the goal it missed."""


def test_the_shipped_world_is_tied_to_its_recipe():
    """A changed recipe (rlhf_helpers.world.WorldConfig) without a rebuild fails here, naming the commands."""
    info = smoke_world().info
    stale = [part for part in PARTS
             if info["keys"][part] != part_key(WorldConfig(), part, info["data"], info["corpus"])]
    assert not stale, (f"WorldConfig changed for {stale} since the shipped world was built: rebuild with `python -m "
                       f"rlhf_helpers.world build --out DIR` and `python -m rlhf_helpers.world ship --out DIR` "
                       f"(docs/offline-world.md), or undo the change.")


def test_the_shipped_world_is_small_and_loads_in_seconds():
    size = sum(p.stat().st_size for p in SHIPPED_WORLD.rglob("*") if p.is_file())
    assert size <= MAX_MB * 1e6, f"the shipped world is {size / 1e6:.1f} MB"
    _verified_world.cache_clear()
    start = time.perf_counter()
    world = smoke_world()
    AutoModelForCausalLM.from_pretrained(world.policy, use_safetensors=True)
    assert time.perf_counter() - start < 10


JUDGE_SAMPLE = 400
"""Reviews of the 2,000 each judge is scored on again here (about 15 s for both on 2 CPU cores; all 2,000 took 80 s)."""
JUDGE_FLIPS = 0.01
"""Share of those reviews whose label may differ from the record: other CPUs round a borderline logit differently."""


@pytest.mark.slow
def test_the_judges_score_what_their_record_says():
    """Both judges' stored predictions on the 2,000 test reviews the build measured them on (`world ship` records
    each label): their accuracy is the recorded one, above the issue's bars, the gold more accurate than the reward;
    and the stored judges, run again here on a seeded sample of those reviews, predict what the record says."""
    world = smoke_world()
    test = _texts("test", os.environ["RLHF_IMDB_DIR"])
    pick = judged_reviews(test, WorldConfig())
    labels = np.array([test[1][j] for j in pick])
    sample = np.random.default_rng(0).choice(len(pick), JUDGE_SAMPLE, replace=False)
    accuracy = {}
    for part in ("classifier", "gold"):
        recorded = np.array([int(c) for c in world.info["predictions_as_stored"][part]])
        assert len(recorded) == len(pick) == WorldConfig().eval_reviews
        accuracy[part] = (recorded == labels).sum() / len(pick)
        assert accuracy[part] == world.info["accuracy_as_stored"][part], accuracy
        assert accuracy[part] >= GOALS[part], accuracy
        here = np.array([int(c) for c in stored_predictions(getattr(world, part), test, WorldConfig(), rows=sample)])
        flips = (here != recorded[sample]).mean()
        assert flips <= JUDGE_FLIPS, f"{part}: {flips:.1%} of {JUDGE_SAMPLE} reviews labelled unlike the record"
    assert accuracy["gold"] > accuracy["classifier"], accuracy


@pytest.mark.slow
def test_the_policy_writes_words():
    """16-token samples of the held-out probe prompts: the unseen-word rate within UNSEEN_LIMIT of real review text's,
    and within a point of the build's own last measurement."""
    world = smoke_world()
    tokenizer = AutoTokenizer.from_pretrained(world.policy)
    probe = WriterProbe.build(tokenizer, WorldConfig(), os.environ["RLHF_IMDB_DIR"])
    policy = AutoModelForCausalLM.from_pretrained(world.policy, use_safetensors=True).eval()
    measured = probe.measure(policy, tokenizer, seed=0)
    real = probe.real_text()
    assert measured["unseen_word_rate"] <= UNSEEN_LIMIT * real["unseen_word_rate"], (measured, real)
    recorded = world.info["parts"]["policy"]["final"]["unseen_word_rate"]
    assert abs(measured["unseen_word_rate"] - recorded) < 0.01, (measured, recorded)
    assert abs(measured["distinct_word_share"] - real["distinct_word_share"]) < 0.05, (measured, real)


@pytest.mark.slow
def test_the_gold_rater_constants_are_its_calibration():
    """The shipped constants are what the calibration gives on this machine (to 0.02), and they rank the four kinds of
    calibration text as a reader would: real text pays the least fluency penalty, gibberish the most."""
    world = smoke_world()
    calibration = calibrate_gold(world.root, os.environ["RLHF_IMDB_DIR"])
    assert calibration["free"] == pytest.approx(world.rater["free"], abs=0.02)
    assert calibration["weight"] == pytest.approx(world.rater["weight"], abs=0.02)
    penalty = {kind: row["fluency_penalty"] for kind, row in world.rater["table"].items()}
    assert penalty["real"] < penalty["shuffled"] < penalty["gibberish"], penalty
    assert json.loads((world.root / "gold_rater.json").read_text()) == world.rater


@pytest.mark.slow
def test_the_step0_evaluation_is_the_recorded_one():
    """The same weights and sampling seed give the recorded step-0 samples on this machine: every response (by hash),
    and the metrics to 1e-4 (other CPUs may round a sampling draw differently: the first six samples then say where)."""
    from rlhf_helpers.world import step0_evaluation

    recorded = smoke_world().info["step0_evaluation"]
    here = step0_evaluation(smoke_world().root)
    assert [s["response"] for s in here["samples"]] == [s["response"] for s in recorded["samples"]]
    assert here["responses_sha256"] == recorded["responses_sha256"]
    for mine, theirs in zip(here["samples"], recorded["samples"]):
        assert mine["reward"] == pytest.approx(theirs["reward"], abs=1e-4)
    for key, value in recorded["metrics"].items():
        assert here["metrics"][key] == pytest.approx(value, abs=1e-4), key


def test_the_samples_source_is_a_paragraph_once_and_a_line_after():
    import torch

    from rlhf_helpers import get_profile
    from rlhf_helpers.models import describe_samples_source

    policy, tokenizer = torch.nn.Linear(10, 10), list(range(4096))  # 110 parameters, a 4,096-token vocabulary
    full = describe_samples_source(get_profile("smoke"), policy, tokenizer, full=True)
    line = describe_samples_source(get_profile("smoke"), policy, tokenizer)
    assert "110 parameters and a 4,096-token vocabulary" in full and "never occur in IMDB's training reviews" in full
    assert line.count(".") == 1 and "110 parameters" in line and "notebook 01" in line
