"""Run the reward–KL frontier sweep (see `rlhf_helpers.frontier`) and write frontier.json and frontier.png.

    python benchmarks/frontier.py --profile smoke --out runs/frontier
    cp runs/frontier/frontier.json rlhf_helpers/results/frontier_smoke.json     # what notebook 07 draws
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlhf_helpers.frontier import SWEEP, plot_frontier, run_point


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--out", type=Path, required=True, help="run folders, frontier.json, frontier.png")
    parser.add_argument("--algos", default="ppo,grpo,dpo")
    args = parser.parse_args(argv)
    algos = args.algos.split(",")
    unknown = sorted(set(algos) - set(SWEEP))
    if unknown:
        parser.error(f"unknown --algos {unknown}; choose from {sorted(SWEEP)}")
    start, points = time.perf_counter(), []
    for algo in algos:
        for beta in SWEEP[algo]:
            points.append(run_point(algo, beta, args.profile, args.out))
            p = points[-1]
            print(f"{algo} β={beta:g}: reward {p['mean_reward']:+.2f}, positive {p['positive_rate']:.2f}, KL "
                  f"{p['kl']:.1f}, gold {p['gold']:+.2f}, ref ppl {p['ref_perplexity']:.0f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frontier.json").write_text(json.dumps({"profile": args.profile, "sweep": SWEEP, "points": points,
                                                        "seconds": time.perf_counter() - start}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    plot_frontier(points, f"Reward–KL frontier · {args.profile} profile").savefig(args.out / "frontier.png", dpi=100)
    return points


if __name__ == "__main__":
    main()
