"""Smoke training speed, this tree against another commit, side by side in one run.

    python benchmarks/smoke_speed.py --ref ee5aa57 --steps 10 --repeats 2 --out smoke_speed.json
    python benchmarks/smoke_speed.py --ref HEAD --ref-env OMP_NUM_THREADS=2 --env OMP_NUM_THREADS=1   # one lever

For each algorithm (PPO, GRPO, DPO) it runs `python -m rlhf_helpers.train --profile smoke` in fresh processes from a
`git worktree` of `--ref` and from this tree, alternating (ref, this, ref, this, ...), so a machine that slows down
or speeds up during the benchmark affects both sides alike. Each measurement is a pair of runs, `--steps 1` and
`--steps N`: the difference of their wall times over the difference of their episodes is the cost of training
alone (loading and the held-out evaluations cancel), whatever each version logs, and for DPO it includes sampling
the pairs, which are its episodes. It prints a table and writes one JSON. Measures, never asserts: speed is a
property of the machine, so the suite does not test it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(pairs: list[str]) -> dict:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def one_run(tree: Path, algo: str, steps: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="smoke-speed-") as scratch:
        out = Path(scratch) / "run"
        cmd = [sys.executable, "-m", "rlhf_helpers.train", "--algo", algo, "--profile", "smoke", "--steps", str(steps),
               "--out", str(out), "--no-progress"]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(tree), "RLHF_PROFILE": "smoke", **env})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"error: {algo} in {tree} failed:\n{done.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        return {"steps": steps, "episodes": summary["episodes"], "wall": round(wall, 2),
                "after": {k: round(summary["after"][k], 4) for k in ("positive_rate", "mean_reward", "kl")}}


def measure(tree: Path, algo: str, steps: int, env: dict) -> dict:
    short, long = one_run(tree, algo, 1, env), one_run(tree, algo, steps, env)
    seconds = long["wall"] - short["wall"]
    return {"short": short, "long": long,
            "seconds_per_1000_episodes": round(1000 * seconds / (long["episodes"] - short["episodes"]), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", required=True, help="the commit to compare against (any git revision)")
    parser.add_argument("--steps", type=int, default=16, help="training steps of the long run (default 16)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side and algorithm (default 2)")
    parser.add_argument("--algos", default="ppo,grpo,dpo")
    parser.add_argument("--ref-env", nargs="*", default=[], help="KEY=VALUE set for the --ref runs only")
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE set for this tree's runs only")
    parser.add_argument("--out", type=Path, help="write the JSON here (never over an existing file)")
    args = parser.parse_args(argv)
    if args.out and args.out.exists():
        parser.error(f"{args.out} exists; choose another --out (nothing was changed).")
    ref_env, env = _env(args.ref_env), _env(args.env)
    commit = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode != 0:
        parser.error(f"--ref {args.ref!r} is not a revision of {ROOT}.")
    here = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"cpu": platform.processor() or platform.machine(),
                                                                    "cpu_count": os.cpu_count()},
              "ref": commit.stdout.strip(), "this": here.strip() + (" + uncommitted changes" if dirty else ""),
              "steps": args.steps, "ref_env": ref_env, "env": env, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="smoke-speed-ref-") as scratch:
        ref_tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(ref_tree), args.ref], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for algo in args.algos.split(","):
                runs = {"ref": [], "this": []}
                for _ in range(args.repeats):
                    runs["ref"].append(measure(ref_tree, algo, args.steps, ref_env))
                    runs["this"].append(measure(ROOT, algo, args.steps, env))
                per = {side: statistics.median(r["seconds_per_1000_episodes"] for r in rs) for side, rs in runs.items()}
                result["runs"][algo] = {**runs, "median_seconds_per_1000_episodes": per,
                                        "speedup": round(per["ref"] / per["this"], 2)}
                print(f"{algo}: {per['ref']:.1f} s -> {per['this']:.1f} s per 1,000 episodes "
                      f"({per['ref'] / per['this']:.2f}x)", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, capture_output=True)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
