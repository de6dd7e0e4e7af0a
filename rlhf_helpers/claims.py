"""A lesson's claim, read from the run that just happened and checked.

The notebooks never type a measured number into their prose: the cell after a result calls `check_claim`, which
prints the claim with this run's numbers when it holds and what happened instead when it does not. In the `smoke`
profile (what CI executes) a claim that does not hold stops the notebook, so a change that breaks a lesson fails CI;
in the `cpu` and `gpu` profiles it is reported and the notebook goes on.
"""

from __future__ import annotations

import os

from .profiles import Profile, get_profile

SMOKE_POSITIVE_RATE = 0.7
"""The smoke profile's bar for a trained policy: at least this share of held-out samples scored positive. On the
shipped world the untrained policy scores 0.55; notebook 04's PPO reached 0.85, TRL's GRPO 0.77-0.81 over seeds 0-2
(`results/grpo_positions_smoke.json`) at the smoke recipe's KL of about 3 nats: 0.8 would fail two GRPO seeds in
three of an unchanged recipe."""
SMOKE_GAIN = 0.15
"""...and at least this much above the untrained policy's share (on real IMDB, where the shipped world starts at 0.55:
about four standard errors of a rate on 128 prompts)."""
SMOKE_DPO_POSITIVE_RATE = 0.7
"""Offline DPO's bar (notebook 07), its own constant so that a recipe where DPO reaches less than the online methods
can lower it with its seeds' evidence. On the shipped world DPO at the profile's settings (β 0.1, lr 2.5e-4, one
pass) reached 0.80, 0.85 and 0.80 over seeds 0-2 (`results/frontier_smoke.json`): the online methods' bar holds."""


PENALTY_SHARE_BAR = 0.25
"""Notebook 06: the rater's penalties (repetition and fluency) may account for at most this share of the mean gold
difference within a preference pair from the initial policy, so that the pairs teach mostly sentiment. On the shipped
world seed 0's pairs measured 17.1 % (2026-12-06; on the earlier world, with a repetition penalty alone, 6.3 %): the
initial policy's two completions of a prompt differ in fluency as well, so the reward model can learn some of it,
but three quarters of what separates a pair is sentiment."""


class ClaimNotShown(AssertionError):
    """A lesson's claim did not hold on this smoke run: the change that caused it breaks the lesson."""


def check_claim(holds: bool, claim: str, otherwise: str, profile: Profile | None = None) -> bool:
    """Print `claim` (with this run's numbers) when `holds`, else `otherwise`: what this run showed instead.

    Returns `holds`. In the smoke profile a claim that does not hold raises ClaimNotShown."""
    profile = profile or get_profile()
    if holds:
        print(f"✓ {claim}")
        return True
    print(f"✗ Not on this run: {otherwise}")
    if profile.name == "smoke":
        raise ClaimNotShown(f"{otherwise} (the smoke profile's lesson check; see rlhf_helpers.claims)")
    return False


def required_gain(before_rate: float) -> float:
    """The gain in positive rate the smoke bar asks of a run that started at `before_rate`.

    +0.3 on real IMDB (`RLHF_IMDB_DIR`, as CI runs it). On the shipped template fixture the untrained policy already
    scores about 0.7, so +0.3 would exceed 1: there, close at least half of the remaining headroom."""
    if os.environ.get("RLHF_IMDB_DIR"):
        return SMOKE_GAIN
    return min(SMOKE_GAIN, 0.5 * (1.0 - before_rate))


def check_training_worked(name: str, before: dict, after: dict, profile: Profile | None = None,
                          min_rate: float = SMOKE_POSITIVE_RATE) -> bool:
    """The central claim of every training notebook: the run made the policy more positive on held-out prompts (to at
    least `min_rate`), and paid for it in KL to the reference. `before`/`after` are `evaluate(...).metrics` dicts."""
    rate0, rate1, kl = before["positive_rate"], after["positive_rate"], after["kl"]
    gain = required_gain(rate0)
    reading = (f"{name}: positive rate {rate0:.2f} -> {rate1:.2f} ({rate1 - rate0:+.2f}), mean reward "
               f"{before['mean_reward']:+.2f} -> {after['mean_reward']:+.2f}, KL to the reference {kl:.2f} nats "
               f"per response")
    holds = rate1 >= min_rate and rate1 - rate0 >= gain and kl > 0 and abs(before["kl"]) < 1e-6
    if holds:
        return check_claim(True, f"{reading}: the policy learned to write positive text, and moved away from the "
                                 f"reference to do it.", "", profile)
    why = []
    if rate1 < min_rate:
        why.append(f"the positive rate stayed below {min_rate}")
    if rate1 - rate0 < gain:
        why.append(f"it rose by less than {gain:.2f}")
    if kl <= 0:
        why.append("the KL is not above 0, so the policy did not move")
    if abs(before["kl"]) >= 1e-6:
        why.append("the untrained policy's KL is not 0 (the reference is not a copy of it)")
    return check_claim(False, "", f"{reading}; {', and '.join(why)}.", profile)


def required_pair_accuracy() -> float:
    """The smoke bar for notebook 06's reward model on held-out pairs, against the gold rater's noiseless preference:
    0.70 on real IMDB (76.2 % with seed 0, 72.7 % with seed 1, measured on 2 CPU cores, 2026-12-02: the rater's
    repetition penalty, which pairs from the initial policy cannot teach, costs a few points against the 78.5 % the
    sentiment judge alone gave), 0.6 on the shipped template fixture, whose few templated reviews give the rater less
    to tell apart."""
    return 0.70 if os.environ.get("RLHF_IMDB_DIR") else 0.6
