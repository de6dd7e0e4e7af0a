"""Smoke PPO recipe candidates, one seeded run each: does the run end near its KL target, at what clip fraction,
reward and cost per step, and what does it write?

    python benchmarks/ppo_recipe.py --out runs/ppo_recipe \
        --variant 'lr2e-4={"learning_rate": 2e-4, "init_kl_coef": 0.3, "kl_horizon": 1000, "ppo_epochs": 2,
                           "mini_batch_size": 32}'

Each variant is `name=JSON` of `get_profile("smoke", **JSON)` overrides (PPOConfig or Profile fields); every run
trains `--steps` steps with a held-out evaluation every `--eval-every`, into `--out/name` (a finished variant is
reused). Prints one line per run and its first samples; benchmarks/README.md has the table. Measures, never asserts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from rlhf_helpers import get_profile
from rlhf_helpers.spec import RunSpec
from rlhf_helpers.train import run


def one_variant(name: str, overrides: dict, out: Path, steps: int, eval_every: int, seed: int) -> dict:
    folder = out / name
    if not (folder / "summary.json").exists():
        run(RunSpec("ppo", seed=seed, steps=steps, eval_every=eval_every), get_profile("smoke", **overrides), folder,
            progress=False)
    metrics = pd.read_json(folder / "metrics.jsonl", lines=True)
    evals = pd.read_json(folder / "eval.jsonl", lines=True)
    return {"variant": name, **overrides,
            "kl_end": round(float(evals.kl.iloc[-1]), 2),
            "beta": f"{metrics.kl_coef.iloc[0]:.3f} -> {metrics.kl_coef.iloc[-1]:.3f}",
            "clipfrac_last10": round(float(metrics.clipfrac.tail(10).mean()), 3),
            "reward": f"{evals.mean_reward.iloc[0]:+.2f} -> {evals.mean_reward.iloc[-1]:+.2f}",
            "positive": f"{evals.positive_rate.iloc[0]:.2f} -> {evals.positive_rate.iloc[-1]:.2f}",
            "seconds_per_step": round(float(metrics.time_step.mean()), 2),
            "samples": pd.read_csv(folder / "samples.csv").response_after.head(4).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", action="append", required=True, help="name=JSON of get_profile overrides")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for spec in args.variant:
        name, sep, overrides = spec.partition("=")
        if not sep:
            raise SystemExit(f"error: --variant wants name=JSON, got {spec!r}")
        row = one_variant(name, json.loads(overrides), args.out, args.steps, args.eval_every, args.seed)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
