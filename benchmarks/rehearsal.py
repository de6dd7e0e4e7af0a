"""Rehearse a profile's real run at GPT-2 scale, without the hub: how long, how much memory, which phase.

    python benchmarks/rehearsal.py --profile cpu --steps 1          # this machine, a few minutes
    python benchmarks/rehearsal.py --profile gpu --steps 3          # on a CUDA machine

The profile's own settings (batch, mini-batch, epochs, response lengths, held-out evaluation) run through the same
`rlhf_helpers.train.run` that notebooks 05/06 and `python -m rlhf_helpers.train` use. Only the weights differ: the
hub ids are replaced (through RLHF_POLICY_MODEL / RLHF_REWARD_MODEL) by stand-ins with the real architectures and
sizes, built by `python -m rlhf_helpers.offline --stand-ins`: GPT-2 124M with the real GPT-2 tokenizer
($RLHF_GPT2_TOKENIZER_DIR) and a DistilBERT-base-sized classifier. Random weights generate random text, so the
rewards mean nothing; shapes, memory and time are the real ones. Data: $RLHF_IMDB_DIR, else the hub's IMDB.

The last line printed is one JSON object: profile, device, policy_params, seconds_per_step (and per algorithm),
phase_seconds (generate, score, forward, update of a PPO step), peak_memory_mb (CUDA max allocated on a GPU, peak
RSS on a CPU), eval_seconds (one held-out evaluation), and projected_minutes for the profile's full `ppo.steps`
in notebook 05 (PPO, evaluated before and after) and notebook 06 (PPO, GRPO and RLOO, five evaluations each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ALGOS = ("ppo", "grpo", "rloo")
PHASES = ("generate", "score", "forward", "update")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=("cpu", "gpu"), required=True)
    parser.add_argument("--steps", type=int, default=1, help="training steps per algorithm (default 1)")
    parser.add_argument("--algos", default="ppo,grpo",
                        help="comma-separated, from ppo,grpo,rloo (RLOO is projected at GRPO's cost when left out)")
    parser.add_argument("--batch-size", type=int, default=None, help="override (cut-down rehearsals only)")
    parser.add_argument("--mini-batch-size", type=int, default=None, help="override (cut-down rehearsals only)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="override the held-out prompt count")
    parser.add_argument("--small-stand-ins", action="store_true",
                        help="2-layer models with the real vocabulary and widths (for the test suite only)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the runs go (default: a temp folder, removed at the end)")
    args = parser.parse_args(argv)
    args.algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    bad = sorted(set(args.algos) - set(ALGOS))
    if bad or not args.algos:
        parser.error(f"--algos takes names from {','.join(ALGOS)}; got {bad or 'nothing'}.")
    if args.steps <= 0:
        parser.error(f"--steps must be positive, got {args.steps}.")
    if not os.environ.get("RLHF_GPT2_TOKENIZER_DIR"):
        parser.error("set RLHF_GPT2_TOKENIZER_DIR to a folder with GPT-2's tokenizer files (vocab.json, merges.txt).")
    return args


class _Timer:
    """Wraps a callable and records the seconds of each call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.calls.append(time.perf_counter() - start)


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main(argv=None) -> dict:
    args = parse_args(argv)
    from rlhf_helpers import get_profile, runs
    from rlhf_helpers.device import default_device
    from rlhf_helpers.offline import build_stand_ins

    device = default_device()
    stand_ins = build_stand_ins(small=args.small_stand_ins)
    os.environ["RLHF_POLICY_MODEL"] = str(stand_ins.policy)
    os.environ["RLHF_REWARD_MODEL"] = str(stand_ins.classifier)
    overrides = {"n_eval_prompts": args.eval_prompts} if args.eval_prompts else {}
    profile = get_profile(args.profile, **overrides)
    timer = _Timer(runs.evaluate)
    runs.evaluate = timer  # every run's held-out evaluation (`RunInputs.evaluate`) calls it: each one is timed
    if args.out is None:  # the runs hold GPT-2-sized checkpoints (hundreds of MB): never leave them in /tmp
        with tempfile.TemporaryDirectory(prefix="rehearsal-") as scratch:
            return _rehearse(args, device, stand_ins, profile, timer, Path(scratch))
    return _rehearse(args, device, stand_ins, profile, timer, args.out)


def _rehearse(args, device, stand_ins, profile, timer, out: Path) -> dict:
    import torch

    from rlhf_helpers import train

    per_algo, phases, eval_calls = {}, {}, []
    for algo in args.algos:
        before_calls = len(timer.calls)
        spec = train.RunSpec(algo, steps=args.steps, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size)
        summary = train.run(spec, profile, out / algo, progress=False)
        eval_calls += timer.calls[before_calls:]
        rows = [json.loads(line) for line in (out / algo / "metrics.jsonl").read_text().splitlines()]
        per_algo[algo] = summary["train_seconds"] / len(rows)
        if algo == "ppo":
            phases = {p: sum(r[f"time_{p}"] for r in rows) / len(rows) for p in PHASES}
    eval_seconds = sum(eval_calls) / len(eval_calls)
    step = {a: per_algo.get(a, per_algo.get("grpo", per_algo.get("ppo"))) for a in ALGOS}
    total = profile.ppo.steps
    evals_05 = 1 + 4  # notebook 06: before, then every ppo.steps // 4 rounds, the last one at the end
    result = {
        "profile": profile.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "policy_params": stand_ins.info["policy_params"],
        "reward_params": stand_ins.info["classifier_params"],
        "settings": {"batch_size": args.batch_size or profile.ppo.batch_size,
                     "mini_batch_size": args.mini_batch_size or profile.ppo.mini_batch_size,
                     "ppo_epochs": profile.ppo.ppo_epochs,
                     "gen_tokens": [profile.ppo.gen_min_tokens, profile.ppo.gen_max_tokens],
                     "n_eval_prompts": profile.n_eval_prompts, "steps": total, "steps_run": args.steps},
        "seconds_per_step": per_algo.get("ppo", next(iter(per_algo.values()))),
        "seconds_per_step_by_algo": per_algo,
        "measured_algos": args.algos,
        "phase_seconds": phases,
        "peak_memory_mb": round(_peak_memory_mb(device), 1),
        "eval_seconds": eval_seconds,
        "projected_minutes": {
            "05_ppo_from_scratch": (total * step["ppo"] + 2 * eval_seconds) / 60,
            "06_trl_grpo_rloo": sum(total * step[a] + evals_05 * eval_seconds for a in ALGOS) / 60,
        },
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
