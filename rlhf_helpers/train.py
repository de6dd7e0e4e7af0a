"""Headless training: the course's runs outside a notebook (a GPU server, a long job, CI).

    python -m rlhf_helpers.train --algo ppo --profile smoke --out runs/ppo-smoke
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --resume   # after a disconnect

Writes to --out: metrics.jsonl (one JSON object per step), summary.json (before/after evaluation on the
fixed held-out prompts, episodes, wall_seconds), samples.csv (prompt, response and reward before and after),
curves.png, and checkpoints/ when --save-every is set. Runs the same code as notebook 04.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .profiles import PROFILE_NAMES

ALGOS = ("ppo",)
RUN_FILES = ("metrics.jsonl", "summary.json", "run.json", "checkpoints")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.train", description=__doc__.split("\n")[0])
    parser.add_argument("--algo", required=True, choices=ALGOS, help="training algorithm")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="course profile (default: $RLHF_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="episodes per step (default: the profile's)")
    parser.add_argument("--mini-batch-size", type=int, default=None, help="episodes per gradient step")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: never)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    # Every check that needs no model happens here, before anything loads.
    if args.steps is not None and args.steps <= 0:
        parser.error(f"--steps must be positive, got {args.steps}.")
    if args.save_every < 0:
        parser.error("--save-every must be 0 (off) or positive.")
    from .profiles import get_profile

    profile = get_profile(args.profile)
    batch = args.batch_size or profile.batch_size
    mini = args.mini_batch_size or profile.mini_batch_size
    if batch <= 0 or mini <= 0 or batch % mini:
        parser.error(f"batch size {batch} is not divisible by mini-batch size {mini}; pass --batch-size and "
                     f"--mini-batch-size so that one divides the other.")
    existing = [name for name in RUN_FILES if (args.out / name).exists()]
    if existing and not args.resume:
        parser.error(f"{args.out} already holds a run ({', '.join(existing)}). Pass --resume to continue it, "
                     f"or choose another --out.")
    args.profile_obj = profile
    return args


def _config(args):
    from .ppo_loop import PPOConfig

    overrides = {"seed": args.seed}
    for key in ("steps", "batch_size", "mini_batch_size"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return PPOConfig.from_profile(args.profile_obj, **overrides)


def run_ppo(args) -> dict:
    import dataclasses

    import pandas as pd
    from transformers import set_seed

    from .checkpoint import checkpoint_dirs, load_checkpoint, save_checkpoint
    from .data import build_prompt_dataset, heldout_prompts
    from .evaluation import evaluate
    from .models import load_policy, load_reward, load_tokenizer, model_ids
    from .plots import plot_training_curves
    from .ppo_loop import make_state, train

    start = time.perf_counter()
    profile, config = args.profile_obj, _config(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_info = {"algo": args.algo, "profile": profile.name, "config": dataclasses.asdict(config),
                "models": dict(zip(("policy", "reward"), model_ids(profile)))}
    if (out / "run.json").exists():
        saved = json.loads((out / "run.json").read_text())
        if saved["config"] != run_info["config"] or saved["algo"] != args.algo:
            raise SystemExit(f"{out} holds a run with another configuration ({saved['config']}); "
                             f"resume it with the same arguments, or choose another --out.")
    (out / "run.json").write_text(json.dumps(run_info, indent=2))
    print(profile.describe(), flush=True)

    set_seed(config.seed)
    tokenizer = load_tokenizer(profile)
    policy, reference = load_policy(profile), load_policy(profile)
    reward = load_reward(profile)
    prompts = build_prompt_dataset(profile, tokenizer, split="train", seed=config.seed)["input_ids"]
    heldout = heldout_prompts(profile, tokenizer)
    state = make_state(config, policy, reference, tokenizer, reward, prompts)

    def run_evaluation():
        return evaluate(policy, reference, tokenizer, reward, heldout, config.gen_min_tokens,
                        config.gen_max_tokens, config.temperature, profile.eval_batch_size)

    checkpoints = checkpoint_dirs(out) if args.resume else []
    if checkpoints:
        extra = load_checkpoint(state, checkpoints[-1])
        before, before_samples, wall_before = extra["before"], pd.DataFrame(extra["before_samples"]), extra["wall"]
        print(f"Resumed from {checkpoints[-1]} (step {state.step}).", flush=True)
    else:
        if args.resume:
            print(f"No checkpoint in {out}: starting from scratch.", flush=True)
        evaluation = run_evaluation()
        before, before_samples, wall_before = evaluation.metrics, evaluation.samples, 0.0
    # Rewrite the metrics log from the checkpoint, dropping steps after it that a killed run had logged.
    with open(out / "metrics.jsonl", "w") as log:
        log.writelines(json.dumps(h) + "\n" for h in state.history)

    def on_step(record: dict) -> None:
        with open(out / "metrics.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        if args.save_every and state.step % args.save_every == 0 and state.step < config.steps:
            save_checkpoint(state, out, extra={"before": before, "before_samples": before_samples.to_dict("list"),
                                               "wall": wall_before + time.perf_counter() - start})

    train(state, on_step=on_step, progress=not args.no_progress)
    after_eval = run_evaluation()
    after = after_eval.metrics

    after_samples = after_eval.samples
    samples = pd.DataFrame({"prompt": before_samples["prompt"],
                            "response_before": before_samples["response"], "reward_before": before_samples["reward"],
                            "response_after": after_samples["response"], "reward_after": after_samples["reward"]})
    samples.to_csv(out / "samples.csv", index=False)
    fig = plot_training_curves(state.history, f"{args.algo} · {profile.name}", before, after)
    fig.savefig(out / "curves.png", dpi=100)
    summary = {"algo": args.algo, "profile": profile.name, "seed": config.seed, "steps": state.step,
               "episodes": state.step * config.batch_size, "before": before, "after": after,
               "wall_seconds": wall_before + time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    summary = {"ppo": run_ppo}[args.algo](args)
    b, a = summary["before"], summary["after"]
    print(f"before: reward {b['mean_reward']:+.3f}, positive {b['positive_rate']:.2f} | after: reward "
          f"{a['mean_reward']:+.3f}, positive {a['positive_rate']:.2f}, KL {a['kl']:.2f}, ref ppl "
          f"{a['ref_perplexity']:.0f} | {summary['episodes']} episodes in {summary['wall_seconds']:.0f} s")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
