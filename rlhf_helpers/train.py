"""Headless training: the course's runs outside a notebook (a GPU server, a long job, CI).

    python -m rlhf_helpers.train --algo ppo --profile smoke --out runs/ppo-smoke
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20 --resume
    python -m rlhf_helpers.train --algo grpo --profile smoke --out runs/grpo-smoke      # or --algo rloo

Writes to --out: metrics.jsonl (one JSON object per step), summary.json (before/after evaluation on the fixed
held-out prompts, episodes, wall_seconds), samples.csv (prompt, response and reward before and after),
curves.png, eval.jsonl (held-out evaluations every --eval-every steps), and checkpoints/ when --save-every is set
(PPO). `run()` is the same code as a function; notebooks 04 and 05 call it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .profiles import PROFILE_NAMES, Profile

ALGOS = ("ppo", "grpo", "rloo")
RUN_FILES = ("metrics.jsonl", "summary.json", "run.json", "checkpoints")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.train", description=__doc__.split("\n")[0])
    parser.add_argument("--algo", required=True, choices=ALGOS, help="ppo (hand-built), grpo or rloo (TRL)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="course profile (default: $RLHF_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="episodes per step (default: the profile's)")
    parser.add_argument("--mini-batch-size", type=int, default=None, help="episodes per gradient step")
    parser.add_argument("--eval-every", type=int, default=0, help="held-out evaluation every N steps (0: ends only)")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: never; ppo only)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (ppo)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    # Every check that needs no model happens here, before anything loads.
    if args.steps is not None and args.steps <= 0:
        parser.error(f"--steps must be positive, got {args.steps}.")
    if args.save_every < 0 or args.eval_every < 0:
        parser.error("--save-every and --eval-every must be 0 (off) or positive.")
    if args.algo != "ppo" and (args.save_every or args.resume):
        parser.error("--save-every and --resume are supported for --algo ppo only.")
    from .profiles import get_profile

    profile = get_profile(args.profile)
    batch = args.batch_size or profile.batch_size
    mini = args.mini_batch_size or profile.mini_batch_size
    if batch <= 0 or mini <= 0 or batch % mini:
        parser.error(f"batch size {batch} is not divisible by mini-batch size {mini}; pass --batch-size and "
                     f"--mini-batch-size so that one divides the other.")
    if args.algo != "ppo":
        from .trl_runs import NUM_GENERATIONS

        if mini % NUM_GENERATIONS[args.algo]:
            parser.error(f"--algo {args.algo} samples {NUM_GENERATIONS[args.algo]} completions per prompt: the "
                         f"mini-batch size ({mini}) must be a multiple of it.")
    existing = [name for name in RUN_FILES if (args.out / name).exists()]
    if existing and not args.resume:
        parser.error(f"{args.out} already holds a run ({', '.join(existing)}). Pass --resume to continue it, "
                     f"or choose another --out.")
    args.profile_obj = profile
    return args


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run(algo: str, profile: Profile, out: Path | str, seed: int = 0, steps: int | None = None,
        batch_size: int | None = None, mini_batch_size: int | None = None, eval_every: int = 0,
        save_every: int = 0, resume: bool = False, progress: bool = True) -> dict:
    """Train with `algo` on `profile` and write the run's files to `out`. Returns the summary."""
    import pandas as pd
    from transformers import set_seed

    from .data import build_prompt_dataset, heldout_prompts
    from .evaluation import evaluate
    from .models import load_policy, load_reward, load_tokenizer, model_ids
    from .plots import plot_training_curves
    from .ppo_loop import PPOConfig

    start = time.perf_counter()
    out = Path(out)
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size,
                                   "mini_batch_size": mini_batch_size}.items() if v is not None}
    config = PPOConfig.from_profile(profile, seed=seed, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {"algo": algo, "profile": profile.name, "config": dataclasses.asdict(config),
                "models": dict(zip(("policy", "reward"), model_ids(profile)))}
    if (out / "run.json").exists():
        saved = json.loads((out / "run.json").read_text())
        if saved["config"] != run_info["config"] or saved["algo"] != algo:
            raise SystemExit(f"{out} holds a run with another configuration ({saved['config']}); "
                             f"resume it with the same arguments, or choose another --out.")
    (out / "run.json").write_text(json.dumps(run_info, indent=2))
    print(profile.describe(), flush=True)

    set_seed(config.seed)
    tokenizer = load_tokenizer(profile)
    policy, reference = load_policy(profile), load_policy(profile)
    reward = load_reward(profile)
    prompts = build_prompt_dataset(profile, tokenizer, split="train", seed=config.seed)
    heldout = heldout_prompts(profile, tokenizer)

    def evaluate_fn(model):
        return evaluate(model, reference, tokenizer, reward, heldout, config.gen_min_tokens, config.gen_max_tokens,
                        config.temperature, profile.eval_batch_size)

    if algo == "ppo":
        history, evals, before, before_samples, wall_before = _train_ppo(
            config, out, policy, reference, tokenizer, reward, prompts["input_ids"], evaluate_fn, eval_every,
            save_every, resume, progress, start)
        model = policy
    else:
        history, evals, before, before_samples, model = _train_trl(
            algo, profile, config, out, policy, tokenizer, reward, prompts["query"], evaluate_fn, eval_every)
        wall_before = 0.0
    after_eval = evaluate_fn(model)
    after = after_eval.metrics
    train_seconds = (history[-1]["train_seconds"] if history else 0.0)
    evals.append({"round": config.steps, "episodes": history[-1]["episodes"], "train_seconds": train_seconds,
                  **after})
    with open(out / "eval.jsonl", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in evals)

    samples = pd.DataFrame({"prompt": before_samples["prompt"],
                            "response_before": before_samples["response"], "reward_before": before_samples["reward"],
                            "response_after": after_eval.samples["response"],
                            "reward_after": after_eval.samples["reward"]})
    samples.to_csv(out / "samples.csv", index=False)
    fig = plot_training_curves(history, f"{algo} · {profile.name}", before, after)
    fig.savefig(out / "curves.png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    summary = {"algo": algo, "profile": profile.name, "seed": config.seed, "steps": config.steps,
               "episodes": history[-1]["episodes"], "before": before, "after": after,
               "train_seconds": train_seconds, "wall_seconds": wall_before + time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _train_ppo(config, out, policy, reference, tokenizer, reward, prompt_ids, evaluate_fn, eval_every, save_every,
               resume, progress, start):
    import pandas as pd

    from .checkpoint import checkpoint_dirs, load_checkpoint, save_checkpoint
    from .ppo_loop import make_state, train

    state = make_state(config, policy, reference, tokenizer, reward, prompt_ids)
    checkpoints = checkpoint_dirs(out) if resume else []
    if checkpoints:
        extra = load_checkpoint(state, checkpoints[-1])
        before, before_samples, wall_before = extra["before"], pd.DataFrame(extra["before_samples"]), extra["wall"]
        evals = extra["evals"]
        print(f"Resumed from {checkpoints[-1]} (step {state.step}).", flush=True)
    else:
        if resume:
            print(f"No checkpoint in {out}: starting from scratch.", flush=True)
        evaluation = evaluate_fn(policy)
        before, before_samples, wall_before = evaluation.metrics, evaluation.samples, 0.0
        evals = [{"round": 0, "episodes": 0, "train_seconds": 0.0, **before}]
    # Rewrite the metrics log from the checkpoint, dropping steps after it that a killed run had logged.
    with open(out / "metrics.jsonl", "w") as log:
        log.writelines(json.dumps(h) + "\n" for h in state.history)

    def on_step(record: dict) -> None:
        previous = state.history[-2]["train_seconds"] if len(state.history) > 1 else 0.0
        record["train_seconds"] = previous + record["time_step"]
        _append(out / "metrics.jsonl", record)
        if eval_every and state.step % eval_every == 0 and state.step < config.steps:
            evals.append({"round": state.step, "episodes": record["episodes"],
                          "train_seconds": record["train_seconds"], **evaluate_fn(policy).metrics})
        if save_every and state.step % save_every == 0 and state.step < config.steps:
            save_checkpoint(state, out, extra={"before": before, "before_samples": before_samples.to_dict("list"),
                                               "evals": evals, "wall": wall_before + time.perf_counter() - start})

    history = train(state, on_step=on_step, progress=progress)
    return history, evals, before, before_samples, wall_before


def _train_trl(algo, profile, config, out, policy, tokenizer, reward, prompt_texts, evaluate_fn, eval_every):
    import tempfile

    from .trl_runs import CourseCallback, make_trl_trainer, sentiment_reward_func, trl_config

    args = trl_config(algo, profile, tempfile.mkdtemp(prefix=f"{algo}-"), seed=config.seed, rounds=config.steps,
                      batch_size=config.batch_size, mini_batch_size=config.mini_batch_size)
    steps_per_round = args.steps_per_generation * args.num_iterations
    reward_func = sentiment_reward_func(reward)
    (out / "metrics.jsonl").write_text("")
    callback = CourseCallback(evaluate_fn, reward_func, steps_per_round, config.batch_size, eval_every,
                              on_record=lambda r: _append(out / "metrics.jsonl", r))
    trainer = make_trl_trainer(algo, policy, tokenizer, reward_func, prompt_texts, args, [callback])
    trainer.train()
    return callback.history, callback.evals, callback.before.metrics, callback.before.samples, trainer.model


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    summary = run(args.algo, args.profile_obj, args.out, seed=args.seed, steps=args.steps,
                  batch_size=args.batch_size, mini_batch_size=args.mini_batch_size, eval_every=args.eval_every,
                  save_every=args.save_every, resume=args.resume, progress=not args.no_progress)
    b, a = summary["before"], summary["after"]
    print(f"{args.algo}: positive {b['positive_rate']:.2f} -> {a['positive_rate']:.2f}, reward "
          f"{b['mean_reward']:+.3f} -> {a['mean_reward']:+.3f}, KL {a['kl']:.2f}, ref ppl {a['ref_perplexity']:.0f} "
          f"| {summary['episodes']} episodes, {summary['train_seconds']:.0f} s training, "
          f"{summary['wall_seconds']:.0f} s in all")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
