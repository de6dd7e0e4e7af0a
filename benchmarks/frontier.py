"""Run the reward–KL frontier sweep (see `rlhf_helpers.frontier`) and write frontier.json and frontier.png.

    python benchmarks/frontier.py --profile smoke --out runs/frontier
    cp runs/frontier/frontier.json rlhf_helpers/results/frontier_smoke.json     # what notebook 08 draws
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import matplotlib

from rlhf_helpers.faults import (
    OutputBusyError, busy_message, hold_output, output_holder, run_cli, write_text_atomic)
from rlhf_helpers.frontier import SEEDS, SWEEP, frontier_points, plot_frontier, run_point
from rlhf_helpers.results import machine


def main(argv: list[str] | None = None) -> list[dict]:
    """Expected faults (a busy --out, Ctrl-C, a full disk) print a few lines and exit 2 or 130, no traceback."""
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--out", type=Path, required=True, help="run folders, frontier.json, frontier.png")
    parser.add_argument("--algos", default=",".join(SWEEP))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds per point")
    args = parser.parse_args(argv)
    algos = args.algos.split(",")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    unknown = sorted(set(algos) - set(SWEEP))
    if unknown:
        parser.error(f"unknown --algos {unknown}; choose from {sorted(SWEEP)}")
    holder = output_holder(args.out)
    if holder:
        raise OutputBusyError(busy_message(args.out, holder, "frontier sweep"))  # a fault, not a usage error
    # One sweep per --out: each point's run also locks its own folder, and a finished point is reused, so an
    # interrupted sweep continues where it stopped when the same command is run again.
    with hold_output(args.out, "frontier sweep"):
        start, points = time.perf_counter(), []
        for seed in seeds:  # seed-major: an interrupted sweep still has every point at the first seeds
            for algo in algos:
                for beta in SWEEP[algo]:
                    points.append(run_point(algo, beta, args.profile, args.out, seed=seed))
                    p = points[-1]
                    print(f"seed {seed} {algo} β={beta:g}: reward {p['mean_reward']:+.2f}, positive "
                          f"{p['positive_rate']:.2f}, KL {p['kl']:.1f}, gold {p['gold']:+.2f}, "
                          f"ref ppl {p['ref_perplexity']:.0f}", flush=True)
        write_text_atomic(args.out / "frontier.json", json.dumps(
            {"profile": args.profile, "sweep": SWEEP, "seeds": seeds, "machine": machine(),
             "date": datetime.date.today().isoformat(), "points": points, "means": frontier_points(points),
             "seconds": time.perf_counter() - start}, indent=1))
        matplotlib.use("Agg")
        fig = plot_frontier(points, f"Reward–KL frontier · {args.profile} profile")
        fig.savefig(args.out / "frontier.png", dpi=100)
    return points


if __name__ == "__main__":
    main()
