"""Notebook 02's SFT recipe run far longer: how many steps does the smoke base need before it writes real words?
Writes sft_longer.json (what notebook 02 draws its own short run against).

    python benchmarks/sft_longer.py --profile smoke --out runs/sft_longer
    cp runs/sft_longer/sft_longer.json rlhf_helpers/results/sft_longer_smoke.json

The notebook's settings (`sft.settings_for`: batch, learning rate, warm-up, response lengths) and its loop
(`sft.train_by_hand` with the course's `sft_loss`, which TRL's SFTTrainer matches), from the world's base, on every
train review long enough for a demonstration (the notebook draws 8,192: a run this long would see those many times).
At each checkpoint the course's evaluation (`sft.writer_row`): held-out loss, unseen-word rate and reward on the
held-out prompts. One seed; the evaluations do not change the run (the random state is put back after each).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlhf_helpers import get_profile
from rlhf_helpers.data import heldout_prompts
from rlhf_helpers.faults import run_cli, write_text_atomic
from rlhf_helpers.models import base_model_id, load_reward, load_tokenizer
from rlhf_helpers.results import machine
from rlhf_helpers.spec import RunError
from rlhf_helpers.sft import demonstrations, review_vocabulary, settings_for, train_by_hand, writer_row

CHECKPOINTS = (0, 30, 120, 240, 480, 960, 1920, 3840, 7680)
"""Steps at which the run is evaluated: doubling, from the notebook's loop by hand (30) and its TRL run (120)."""

N_TRAIN = 24_000
"""Demonstrations, one per train review (the split holds about 24,900 long enough): 7,680 steps of 32 see each about
ten times."""


def main(argv: list[str] | None = None) -> dict:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=CHECKPOINTS[-1])
    parser.add_argument("--n-train", type=int, default=N_TRAIN, help="demonstrations (a smaller number for a test)")
    args = parser.parse_args(argv)
    if (args.out / "sft_longer.json").exists():
        raise RunError(f"{args.out} holds a finished benchmark (sft_longer.json). Choose another --out; nothing was "
                       f"changed.")
    profile = get_profile(args.profile)
    settings = dataclasses.replace(settings_for(profile), steps=args.steps, n_train=args.n_train, eval_every=30)
    tokenizer, reward = load_tokenizer(profile), load_reward(profile)
    vocabulary, prompts = review_vocabulary(profile), heldout_prompts(profile, tokenizer)
    shape = {"response_tokens": settings.response_tokens, "response_min_tokens": settings.response_min_tokens}
    train = demonstrations(profile, tokenizer, "train", settings.n_train, seed=settings.seed, **shape)
    heldout = demonstrations(profile, tokenizer, "test", settings.n_heldout, seed=settings.seed + 1, **shape)
    model = AutoModelForCausalLM.from_pretrained(base_model_id(profile), dtype=torch.float32).eval()
    checkpoints, start = [], time.perf_counter()

    def evaluate_at(row: dict, trained) -> None:
        if row["step"] not in CHECKPOINTS and row["step"] != settings.steps:
            return
        state, was_training = torch.get_rng_state(), trained.training
        measured, samples = writer_row(trained, tokenizer, prompts, vocabulary, reward, profile.eval_sampling, heldout)
        torch.set_rng_state(state)  # the evaluation samples with its own seed: the run goes on as without it
        trained.train(was_training)
        checkpoints.append({"step": row["step"], "seconds": round(time.perf_counter() - start, 1), **measured,
                            "samples": samples.head(6)[["prompt", "response"]].to_dict("records")})
        print(f"step {row['step']}: held-out loss {measured['held-out loss (nats/token)']:.3f}, unseen "
              f"{measured['unseen-word rate']:.1%}, reward {measured['mean reward']:+.2f}", flush=True)

    log = train_by_hand(model, train, heldout, tokenizer.pad_token_id, settings, on_measure=evaluate_at)
    result = {"profile": args.profile, "seed": settings.seed, "machine": machine(),
              "date": datetime.date.today().isoformat(), "seconds": time.perf_counter() - start,
              "settings": dataclasses.asdict(settings), "checkpoints": checkpoints,
              "heldout_curve": [{"step": r["step"], "heldout_loss": r["heldout_loss"]} for r in log
                                if "heldout_loss" in r]}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "sft_longer.json", json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
