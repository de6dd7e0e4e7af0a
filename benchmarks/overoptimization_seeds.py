"""Notebook 07's over-optimization study over several seeds: the band the notebook draws its own run against.

    python benchmarks/overoptimization_seeds.py --profile smoke --seeds 0,1,2 --out runs/overopt_seeds
    cp runs/overopt_seeds/overoptimization.json rlhf_helpers/results/overoptimization_smoke.json

Each seed is the whole study (`rlhf_helpers.overoptimization.run_study`): its own preference pairs, reward models,
best-of-n samples and PPO runs. A seed whose study already finished in --out is reused, so an interrupted sweep
continues where it stopped. Writes overoptimization.json: the per-seed curves, their bands (`seed_bands`) and the
reading of each PPO run on one yardstick (`paired_over_seeds`: per seed, the gold around the peak chosen on the other
seeds against the last evaluations), and the same reading under ten variants of the gold rater's constants
(`rater_sensitivity`, re-scoring the saved samples), with the machine and the date.
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
from rlhf_helpers.faults import run_cli, write_text_atomic
from rlhf_helpers.models import load_gold
from rlhf_helpers.overoptimization import HUB, SMOKE, paired_over_seeds, rater_sensitivity, run_study, seed_bands
from rlhf_helpers.results import machine


def main(argv: list[str] | None = None) -> dict:
    """Expected faults (a busy --out, Ctrl-C, a full disk) print a few lines and exit 2 or 130, no traceback."""
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated study seeds (at least 2 for a spread)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds needs at least two distinct seeds >= 0 for a spread, got {args.seeds!r}")
    profile = get_profile(args.profile)
    base = SMOKE if profile.offline else HUB
    start, studies = time.perf_counter(), {}
    for seed in seeds:
        folder = args.out / f"seed-{seed}"
        if (folder / "summary.json").exists():
            studies[seed] = json.loads((folder / "summary.json").read_text())
        else:
            studies[seed] = run_study(profile, folder, dataclasses.replace(base, seed=seed),
                                      log=lambda m, s=seed: print(f"seed {s}: {m}", flush=True))
    bands = seed_bands({seed: s["rl"] for seed, s in studies.items()})
    result = {"profile": profile.name, "seeds": seeds, "config": {k: v for k, v in studies[seeds[0]]["config"].items()
                                                                  if k != "seed"},
              "gold_model": studies[seeds[0]]["gold_model"], "machine": machine(),
              "date": datetime.date.today().isoformat(), "seconds": time.perf_counter() - start,
              "study_seconds": sum(s["seconds"]["total"] for s in studies.values()),  # reused seeds included
              "by_seed": {str(seed): {"rl": s["rl"], "bon": s["bon"], "rm": s["rm"]["by_model"],
                                      "seconds": s["seconds"]} for seed, s in studies.items()},
              "bands": bands, "reading": paired_over_seeds({seed: s["rl"] for seed, s in studies.items()}),
              "rater_sensitivity": rater_sensitivity(
                  {seed: pd.read_csv(args.out / f"seed-{seed}" / "rl_samples.csv.gz") for seed in seeds},
                  load_gold(profile))}
    write_text_atomic(args.out / "overoptimization.json", json.dumps(result, indent=1))
    for run, r in result["reading"].items():
        print(f"{run}: mean gold fall {r['fall_mean']:+.2f} ± {2 * r['fall_stderr']:.2f} (twice its standard error, "
              f"{r['seeds']} seeds), proxy rise {r['proxy_rise_mean']:+.2f}; shown: {r['shown']}", flush=True)
    for row in result["rater_sensitivity"]:
        print(f"{row['variant']:>26} | {row['run']}: fall {row['fall_mean']:+.2f} ± {2 * row['fall_stderr']:.2f}, "
              f"shown: {row['shown']}", flush=True)
    return result


if __name__ == "__main__":
    main()
