"""How DPO's learning rate was chosen: the smoke DPO run (β = the profile's) at several learning rates, scored by the
held-out evaluation every run uses. Writes dpo_learning_rate.json with the machine and the date.

    python benchmarks/dpo_learning_rate.py --profile smoke --out runs/dpo_lr
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from rlhf_helpers import get_profile
from rlhf_helpers.faults import run_cli, write_text_atomic
from rlhf_helpers.results import machine
from rlhf_helpers.train import RunSpec, run

LEARNING_RATES = (1e-4, 2.5e-4, 5e-4, 1e-3)


def main(argv: list[str] | None = None) -> dict:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    points = []
    for lr in LEARNING_RATES:
        folder = args.out / f"lr-{lr:g}"
        summary = (json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else
                   run(RunSpec("dpo", seed=args.seed), get_profile(args.profile, dpo_learning_rate=lr), folder,
                       progress=False))
        points.append({"learning_rate": lr, **{k: summary["after"][k] for k in ("mean_reward", "positive_rate", "kl",
                                                                               "ref_perplexity")},
                       "train_seconds": summary["train_seconds"]})
        p = points[-1]
        print(f"lr {lr:g}: reward {p['mean_reward']:+.2f}, positive {p['positive_rate']:.2f}, KL {p['kl']:.1f}, "
              f"ref ppl {p['ref_perplexity']:.0f}", flush=True)
    result = {"profile": args.profile, "seed": args.seed, "dpo_beta": get_profile(args.profile).dpo.beta,
              "machine": machine(), "date": datetime.date.today().isoformat(), "points": points}
    write_text_atomic(args.out / "dpo_learning_rate.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
