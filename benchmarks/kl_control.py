"""Does the adaptive KL controller hold its target within a smoke-sized budget? The same PPO run (notebook 05's)
with the controller as shipped and with it scaled to the budget; writes kl_control.json (what notebook 05 draws).

    python benchmarks/kl_control.py --profile smoke --out runs/kl_control
    cp runs/kl_control/kl_control.json rlhf_helpers/results/kl_control_smoke.json

Ziegler et al.'s controller moves β by at most 20 % × episodes / horizon per step. The classic horizon of 10,000
episodes lets a 40 × 64-episode run move β by ≤ 0.13 % a step: β cannot follow the KL. The smoke profile's 1,000
allows ≤ 1.3 % a step, 64 up to 20 %. Each variant is one run (seed 0), the runner's own held-out evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path

import pandas as pd

from rlhf_helpers import get_profile
from rlhf_helpers.evaluation import repetition_reading
from rlhf_helpers.faults import run_cli, write_text_atomic
from rlhf_helpers.models import load_tokenizer
from rlhf_helpers.results import machine
from rlhf_helpers.train import RunSpec, run

VARIANTS = {
    "as shipped": {},
    "classic horizon 10,000": {"kl_horizon": 10_000},
    "horizon 64": {"kl_horizon": 64},
    "no KL penalty": {"init_kl_coef": 0.0, "kl_target": None},
}
"""name -> PPOConfig overrides of the profile's PPO (the smoke profile's horizon is 1,000 episodes). "no KL penalty" is
notebook 05's hacked run, whose samples it shows beside the learner's."""

SHOWN = 8
"""Held-out samples kept per variant (the first prompts of the held-out set, the same for every run)."""


def main(argv: list[str] | None = None) -> dict:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    base = get_profile(args.profile)
    tokenizer = load_tokenizer(base)
    points, start = [], time.perf_counter()
    for name, overrides in VARIANTS.items():
        profile = dataclasses.replace(base, ppo=dataclasses.replace(base.ppo, **overrides))
        out = args.out / name.replace(" ", "_").replace(",", "").replace("β", "beta")
        summary = run(RunSpec("ppo", seed=0), profile, out, progress=False)
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        samples = pd.read_csv(out / "samples.csv", keep_default_na=False)  # every held-out prompt, before and after
        points.append({"variant": name, **overrides, "kl_target": profile.ppo.kl_target,
                       "beta_start": steps[0]["kl_coef"], "beta_end": steps[-1]["kl_coef"],
                       # the trajectory's extremes: a fast controller can swing β far from both ends
                       "beta_min": min(s["kl_coef"] for s in steps),
                       "beta_min_step": min(steps, key=lambda s: s["kl_coef"])["step"],
                       "train_kl_max": max(s["kl"] for s in steps),
                       "train_kl_max_step": max(steps, key=lambda s: s["kl"])["step"],
                       "train_kl_last5": sum(s["kl"] for s in steps[-5:]) / 5,
                       "before": summary["before"], "after": summary["after"],
                       "repetition": repetition_reading(samples.response_after, tokenizer),
                       "samples": samples.head(SHOWN)[["prompt", "response_after", "reward_after"]].rename(
                           columns={"response_after": "response", "reward_after": "reward"}).to_dict("records")})
        print(f"{name}: KL {summary['after']['kl']:.1f} (target {profile.ppo.kl_target}), reward "
              f"{summary['after']['mean_reward']:+.2f}, β {steps[0]['kl_coef']:.3f} -> {steps[-1]['kl_coef']:.3f}",
              flush=True)
    result = {"profile": args.profile, "seed": 0, "machine": machine(), "date": datetime.date.today().isoformat(),
              "seconds": time.perf_counter() - start, "points": points}
    write_text_atomic(args.out / "kl_control.json", json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
