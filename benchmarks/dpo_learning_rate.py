"""How DPO's learning rate and epochs are chosen: the smoke DPO run (β = the profile's) at several learning rates for
`MAX_EPOCHS` epochs each, read on its **validation pairs** (training-split prompts the run never trains on, evaluated
by TRL at each epoch's end; `dpo.validation_pairs`). The pick is the (learning rate, epochs) with the lowest validation
DPO loss: the held-out evaluation prompts, which every method is compared on, never choose a setting. With a constant
learning rate, epoch e of a longer run is the e-epoch run, so one run per rate gives the whole curve. Writes
dpo_learning_rate.json with the machine and the date.

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

LEARNING_RATES = (2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3)
"""Spans the 6-layer policy: at 1e-3 (the 2-layer policy's choice) its DPO leaves the language at once."""
MAX_EPOCHS = 6


def choose(points: list[dict]) -> dict:
    """The point with the lowest validation loss (ties: fewer epochs, then the smaller learning rate)."""
    return min(points, key=lambda p: (p["validation_loss"], p["epochs"], p["learning_rate"]))


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
                   run(RunSpec("dpo", seed=args.seed),
                       get_profile(args.profile, dpo_learning_rate=lr, dpo_epochs=MAX_EPOCHS), folder,
                       progress=False))
        for point in summary["validation_pairs"]:
            points.append({"learning_rate": lr, "epochs": point["epoch"], "validation_loss": point["loss"],
                           "validation_accuracy": point["accuracy"], "validation_margin": point["margin"]})
            print(f"lr {lr:g}, epoch {point['epoch']}: validation loss {point['loss']:.3f}, accuracy "
                  f"{point['accuracy']:.2f}", flush=True)
    pick = choose(points)
    result = {"profile": args.profile, "seed": args.seed, "dpo_beta": get_profile(args.profile).dpo.beta,
              "chosen_on": "validation pairs (dpo.validation_pairs): training-split prompts the run never trains on",
              "choice": {"learning_rate": pick["learning_rate"], "epochs": pick["epochs"]},
              "machine": machine(), "date": datetime.date.today().isoformat(), "points": points}
    write_text_atomic(args.out / "dpo_learning_rate.json", json.dumps(result, indent=1))
    print(f"chosen: learning rate {pick['learning_rate']:g}, {pick['epochs']} epoch(s)")
    return result


if __name__ == "__main__":
    main()
