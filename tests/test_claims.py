"""Lesson checks: they stop a smoke run whose lesson broke, and only report in the learners' profiles."""

import pytest

from rlhf_helpers import get_profile
from rlhf_helpers.claims import (SMOKE_DPO_POSITIVE_RATE, SMOKE_GAIN, SMOKE_POSITIVE_RATE, ClaimNotShown, check_claim,
                                  check_penalty_keeps_text, check_training_worked, read_kl_control, required_gain,
                                  required_pair_accuracy)

BEFORE = {"positive_rate": 0.55, "mean_reward": 0.05, "kl": 0.0}  # the shipped world's untrained policy


def test_a_claim_that_holds_is_printed_with_its_reading(capsys):
    assert check_claim(True, "reward rose to 0.98", "reward stayed flat", get_profile("smoke"))
    assert capsys.readouterr().out == "✓ reward rose to 0.98\n"


def test_a_claim_that_fails_stops_smoke_and_only_reports_elsewhere(capsys):
    with pytest.raises(ClaimNotShown, match="reward stayed flat"):
        check_claim(False, "reward rose", "reward stayed flat", get_profile("smoke"))
    assert "Not on this run: reward stayed flat" in capsys.readouterr().out
    for name in ("cpu", "gpu"):
        assert check_claim(False, "reward rose", "reward stayed flat", get_profile(name)) is False
        assert "Not on this run: reward stayed flat" in capsys.readouterr().out


def test_the_training_check_names_what_failed(capsys, monkeypatch):
    monkeypatch.setenv("RLHF_IMDB_DIR", "/somewhere")
    good = {"positive_rate": 0.97, "mean_reward": 4.1, "kl": 25.0}
    assert check_training_worked("PPO", BEFORE, good, get_profile("smoke"))
    assert "0.55 -> 0.97 (+0.42)" in capsys.readouterr().out
    timid = {"positive_rate": 0.6, "mean_reward": 0.5, "kl": 3.0}
    with pytest.raises(ClaimNotShown, match=f"stayed below {SMOKE_POSITIVE_RATE}, and it rose by less than "
                                            f"{SMOKE_GAIN:.2f}"):
        check_training_worked("PPO", BEFORE, timid, get_profile("smoke"))
    frozen = {"positive_rate": 0.9, "mean_reward": 2.0, "kl": 0.0}
    assert not check_training_worked("PPO", BEFORE, frozen, get_profile("gpu"))
    assert "the KL is not above 0" in capsys.readouterr().out
    # a notebook may hold one method to its own bar (08: offline DPO, `SMOKE_DPO_POSITIVE_RATE`)
    low_start = {"positive_rate": SMOKE_POSITIVE_RATE - SMOKE_GAIN - 0.1, "mean_reward": -0.5, "kl": 0.0}
    between = {"positive_rate": SMOKE_POSITIVE_RATE - 0.02, "mean_reward": 1.0, "kl": 5.0}
    with pytest.raises(ClaimNotShown, match=f"stayed below {SMOKE_POSITIVE_RATE}\\. \\(the smoke"):
        check_training_worked("DPO", low_start, between, get_profile("smoke"))
    assert check_training_worked("DPO", low_start, between, get_profile("smoke"), min_rate=SMOKE_POSITIVE_RATE - 0.05)
    assert 0.5 < SMOKE_DPO_POSITIVE_RATE <= SMOKE_POSITIVE_RATE


def test_the_gain_bar_leaves_room_on_the_fixture(monkeypatch):
    monkeypatch.setenv("RLHF_IMDB_DIR", "/somewhere")
    assert required_gain(0.9) == SMOKE_GAIN
    monkeypatch.delenv("RLHF_IMDB_DIR")
    assert required_gain(0.9) == pytest.approx(0.05) and required_gain(0.2) == SMOKE_GAIN


def test_the_reward_model_bar_is_lower_on_the_fixture(monkeypatch):
    monkeypatch.setenv("RLHF_IMDB_DIR", "/somewhere")
    assert required_pair_accuracy() == 0.70
    monkeypatch.delenv("RLHF_IMDB_DIR")
    assert required_pair_accuracy() == 0.6


def test_the_training_check_names_its_cost(capsys):
    after = {"positive_rate": 0.85, "mean_reward": 2.2, "kl": 5.77, "ref_perplexity": 64.6}
    assert check_training_worked("PPO", {**BEFORE, "ref_perplexity": 50.5}, after, get_profile("smoke"))
    out = capsys.readouterr().out
    assert ("the cost: KL to the reference 5.77 nats per response, the reference's perplexity of the text 50 -> 65 "
            "(the text reads stranger to the reference)" in out)
    assert check_training_worked("GRPO", {**BEFORE, "ref_perplexity": 50.5}, {**after, "ref_perplexity": 39.0})
    assert "50 -> 39 (lower: the text grew more predictable to the reference" in capsys.readouterr().out
    assert check_training_worked("RLOO", {**BEFORE, "ref_perplexity": 50.5}, {**after, "ref_perplexity": 51.2})
    assert "50 -> 51 (about unchanged)" in capsys.readouterr().out


def test_the_penalty_check_compares_kl_and_repetition_with_the_unpenalized_run(capsys):
    mine, rep = {"kl": 5.8, "mean_reward": 2.2}, {"distinct_token_share": 0.9}
    hacked = {"after": {"kl": 30.0, "mean_reward": 4.0}, "repetition": {"distinct_token_share": 0.5}}
    assert check_penalty_keeps_text(mine, rep, hacked, get_profile("smoke"))
    out = capsys.readouterr().out
    assert out.startswith("✓ Without the penalty the policy moved 30.0 nats") and "price is +1.80 of reward" in out
    varied = {"after": {"kl": 30.0, "mean_reward": 4.0}, "repetition": {"distinct_token_share": 0.95}}
    with pytest.raises(ClaimNotShown, match="did not keep the text more varied"):
        check_penalty_keeps_text(mine, rep, varied, get_profile("smoke"))


def _point(variant, kl, reward, target=6.0, beta=(0.3, 0.2), ppl=(50.0, 60.0)):
    return {"variant": variant, "kl_target": target, "beta_start": beta[0], "beta_end": beta[1],
            "before": {"ref_perplexity": ppl[0]}, "after": {"kl": kl, "mean_reward": reward, "positive_rate": 0.8,
                                                             "ref_perplexity": ppl[1]}}


def test_the_kl_control_reading_names_the_closest_controller_and_ignores_the_unpenalized_run():
    points = [_point("as shipped", 5.8, 2.2), _point("horizon 64", 14.0, 3.0, beta=(0.3, 0.1)),
              _point("no KL penalty", 1.0, 5.0, target=None)]
    lines = read_kl_control(points)
    assert lines[0].startswith("The profile's own controller ended closest to the target: KL 5.8")
    assert any(line.startswith("'horizon 64': β ended lower than it started") for line in lines)
    assert not any("fell to" in line for line in lines)  # no trajectory shipped: no swing is read
    points[1].update(beta_min=0.003, beta_min_step=23)
    assert "β fell to 0.003 by step 23" in next(line for line in read_kl_control(points) if "horizon 64" in line)
    points[1].update(beta_min=0.09)  # β only drifted down to where it ended: nothing to tell
    assert not any("fell to" in line for line in read_kl_control(points))
    points[0] = _point("as shipped", 9.0, 2.2)
    closer = read_kl_control(points + [_point("slow", 6.5, 1.5)])
    assert closer[0].startswith("Closest to the target: 'slow'") and "cost reward" in closer[1]


def test_the_kl_check_says_how_the_run_got_to_its_target(capsys):
    from rlhf_helpers.claims import check_kl_near_target

    climbing = [0.5 * i for i in range(1, 13)]  # 0.5 ... 6.0, below a target of 6 at every step but the last
    assert check_kl_near_target(climbing[:-1], 5.8, 6.0, (0.3, 0.18), get_profile("smoke"))
    out = capsys.readouterr().out
    assert "within half of it either way. The controller did not hold it there: it lowered β at every step and never " \
           "had to regulate around the target; the KL got there because the run ended while it was still climbing. " \
           "How: the training KL stayed below the target all run, still " \
           "rising at the end, and β only fell (0.300 -> 0.180), so the controller never had to pull it back." in out
    held = [2.0, 4.0, 7.0, 8.0, 7.0, 6.5, 6.0, 6.0, 5.9, 6.0, 6.0, 5.9]
    assert check_kl_near_target(held, 6.1, 6.0, (0.3, 0.4), get_profile("smoke"))
    assert "above the target at 33% of the steps, and β went 0.300 -> 0.400" in capsys.readouterr().out
    with pytest.raises(ClaimNotShown, match="more than half the target away"):
        check_kl_near_target(held, 12.0, 6.0, (0.3, 0.4), get_profile("smoke"))
