"""What the position-id fix changes for GRPO: the smoke GRPO run with TRL's own log-prob pass (no position ids, so
left-padded prompts are scored at shifted positions) against the course's (`trl_runs.mask_positions`), paired by seed.
Writes grpo_positions.json with the machine and the date.

    python benchmarks/grpo_positions.py --profile smoke --seeds 0,1,2 --out runs/grpo_positions
    cp runs/grpo_positions/grpo_positions.json rlhf_helpers/results/grpo_positions_smoke.json  (notebook 06 reads it)
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

from rlhf_helpers import get_profile, trl_runs
from rlhf_helpers.faults import run_cli, write_text_atomic
from rlhf_helpers.results import machine
from rlhf_helpers.train import RunSpec, run

METRICS = ("mean_reward", "positive_rate", "kl", "ref_perplexity")


def main(argv: list[str] | None = None) -> dict:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}
    for fixed in (False, True):
        trl_runs.MASK_POSITIONS = fixed
        for seed in seeds:
            folder = args.out / f"{'fixed' if fixed else 'trl'}-seed-{seed}"
            summary = (json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else
                       run(RunSpec("grpo", seed=seed), get_profile(args.profile), folder, progress=False))
            runs[(fixed, seed)] = summary["after"]
            print(f"{'fixed' if fixed else 'TRL  '} seed {seed}: " + ", ".join(
                f"{k} {summary['after'][k]:.3f}" for k in METRICS), flush=True)
    paired = {}
    for key in METRICS:
        diff = np.array([runs[(True, s)][key] - runs[(False, s)][key] for s in seeds])
        paired[key] = {"mean_difference": float(diff.mean()),
                       "stderr": float(diff.std(ddof=1) / np.sqrt(len(seeds))) if len(seeds) > 1 else float("nan")}
    result = {"profile": args.profile, "seeds": seeds, "machine": machine(), "date": datetime.date.today().isoformat(),
              "runs": [{"positions_fixed": fixed, "seed": seed, **after} for (fixed, seed), after in runs.items()],
              "fixed_minus_trl": paired}
    write_text_atomic(args.out / "grpo_positions.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
