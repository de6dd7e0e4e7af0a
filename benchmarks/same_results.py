"""A refactor proves itself: the same seeded runs, before and after, must give byte-identical results.

    python benchmarks/same_results.py run --out runs/same-before          # on the old code
    python benchmarks/same_results.py run --out runs/same-after           # on the new code, same machine
    python benchmarks/same_results.py compare runs/same-before runs/same-after

`run` makes, on the smoke profile, each run through its public command or function, one process each:
the four training CLIs (`python -m rlhf_helpers.train --algo ppo|grpo|rloo|dpo`, the profile's own steps),
one over-optimization study seed (`python -m rlhf_helpers.overoptimization --seed 0`) and one frontier point of
each method (`rlhf_helpers.frontier.run_point`, the middle β, seed 0). It writes `digests.json`: the SHA-256 of
every file each run wrote, with timings taken out of JSON and JSON-lines files first (keys that hold seconds,
times or dates) and figures left out (they draw timings on an axis). `compare` lists every file that differs.
Seeded runs repeat only on the same machine (CPU vector unit and thread count): run both sides on one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ALGOS = ("ppo", "grpo", "rloo", "dpo")
FRONTIER = {"ppo": 0.06, "ppo_rm": 0.06, "grpo": 0.06, "dpo": 0.1, "online_dpo": 0.1}
"""One point per frontier method: its middle β."""
TIMING_WORDS = ("seconds", "time", "wall", "date", "machine")
"""Keys whose values are timings or the machine, not results: dropped before hashing."""


def _strip_timings(value):
    if isinstance(value, dict):
        return {k: _strip_timings(v) for k, v in value.items() if not any(w in k for w in TIMING_WORDS)}
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


def file_digest(path: Path, run_folder: Path) -> str | None:
    """SHA-256 of a result file, timings taken out (and the run's own folder, which a model card quotes); None for a
    figure."""
    if path.suffix == ".png":
        return None
    data = path.read_bytes()
    if path.suffix == ".md":
        data = data.replace(str(run_folder).encode(), b"{out}")
    if path.suffix == ".json":
        data = json.dumps(_strip_timings(json.loads(data)), sort_keys=True).encode()
    elif path.suffix == ".jsonl":
        data = "\n".join(json.dumps(_strip_timings(json.loads(line)), sort_keys=True)
                         for line in data.decode().splitlines() if line.strip()).encode()
    return hashlib.sha256(data).hexdigest()


def folder_digests(folder: Path) -> dict:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and (digest := file_digest(path, folder)):
            found[str(path.relative_to(folder))] = digest
    return found


def commands() -> dict[str, list[str]]:
    python = sys.executable
    runs = {f"train-{algo}": [python, "-m", "rlhf_helpers.train", "--algo", algo, "--profile", "smoke",
                              "--no-progress", "--out", "{out}"] for algo in ALGOS}
    runs["overoptimization-seed0"] = [python, "-m", "rlhf_helpers.overoptimization", "--profile", "smoke",
                                      "--seed", "0", "--out", "{out}"]
    for algo, beta in FRONTIER.items():
        runs[f"frontier-{algo}"] = [python, "-c", "import sys; from pathlib import Path; "
                                    "from rlhf_helpers.frontier import run_point; "
                                    f"print(run_point({algo!r}, {beta}, 'smoke', Path(sys.argv[1]), seed=0))",
                                    "{out}"]
    return runs


def run(out: Path, only: list[str] | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RLHF_PROFILE": "smoke", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    digests, seconds = {}, {}
    for name, command in commands().items():
        if only and name not in only:
            continue
        folder = out / name
        start = time.perf_counter()
        if not folder.exists():
            subprocess.run([part.replace("{out}", str(folder)) for part in command], env=env, check=True)
        seconds[name] = round(time.perf_counter() - start, 1)
        digests[name] = folder_digests(folder)
        print(f"{name}: {len(digests[name])} files, {seconds[name]} s", flush=True)
    (out / "digests.json").write_text(json.dumps({"digests": digests, "seconds": seconds}, indent=1))
    return digests


def compare(a: Path, b: Path) -> int:
    da = json.loads((a / "digests.json").read_text())["digests"]
    db = json.loads((b / "digests.json").read_text())["digests"]
    differ = 0
    for name in sorted(set(da) | set(db)):
        files_a, files_b = da.get(name, {}), db.get(name, {})
        bad = sorted(f for f in set(files_a) | set(files_b) if files_a.get(f) != files_b.get(f))
        differ += bool(bad)
        print(f"{name}: {len(files_a)} files, " + (f"DIFFER: {', '.join(bad)}" if bad else "identical"))
    print("all identical" if not differ else f"{differ} run(s) differ")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="make the seeded runs and their digests")
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    compare_parser = sub.add_parser("compare", help="compare two `run` folders")
    compare_parser.add_argument("a", type=Path)
    compare_parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.out, args.only.split(",") if args.only else None)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
