"""Headless training: the course's runs outside a notebook (a GPU server, a long job, CI).

    python -m rlhf_helpers.train --algo ppo --profile smoke --out runs/ppo-smoke
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20 --resume
    python -m rlhf_helpers.train --algo grpo --profile smoke --out runs/grpo-smoke      # or --algo rloo
    python -m rlhf_helpers.train --algo dpo --profile smoke --out runs/dpo-smoke

Writes to --out: metrics.jsonl (one JSON object per step), summary.json (before/after evaluation on the fixed
held-out prompts, episodes, wall_seconds), samples.csv (prompt, response and reward before and after),
curves.png, eval.jsonl (held-out evaluations every --eval-every steps), and checkpoints/ when --save-every is set
(PPO). `run()` is the same code as a function; notebooks 04 and 05 call it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import shlex
import sys
import time
from pathlib import Path

from .faults import (OutOfMemoryError, OutputBusyError, OutputWriteError, RunInterrupted, SettingError, atomic_write,
                     busy_message, disk_full_message, hold_output, is_disk_full, is_out_of_memory, is_under,
                     output_holder, run_cli, unwritable_message, write_text_atomic)
from .device import world_size
from .profiles import PROFILE_NAMES, Profile, check_batch_split
from .tracking import TRACKERS, MetricLogger, check_tracker, trl_logging

ALGOS = ("ppo", "grpo", "rloo", "dpo")
OUTPUT_FILES = ("metrics.jsonl", "summary.json", "checkpoints", "samples.csv", "eval.jsonl", "curves.png", "policy")
"""Files a run writes; any of them in --out means the folder holds (part of) a run."""


def run_status(out: Path) -> str:
    """What --out holds: "finished" (summary.json), "partial" (trained steps, no summary), "empty" (nothing, or
    only the marker of a start that failed before its first step), or "missing"."""
    out = Path(out)
    if not out.is_dir():
        return "missing"
    if (out / "summary.json").is_file():
        return "finished"
    metrics = out / "metrics.jsonl"
    checkpoints = out / "checkpoints"
    if (metrics.is_file() and metrics.stat().st_size > 0) or (checkpoints.is_dir() and any(checkpoints.iterdir())):
        return "partial"
    if any((out / name).exists() for name in OUTPUT_FILES if name != "metrics.jsonl"):
        return "partial"  # evaluation files without metrics: not ours to overwrite silently
    return "empty"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value} (numpy and torch seeds are unsigned)")
    return value




def is_main_process() -> bool:
    """Only the first process writes the run's files; the others train and evaluate the same model alongside."""
    return int(os.environ.get("RANK", "0")) == 0


def check_run_arguments(algo: str, profile: Profile, seed: int = 0, steps: int | None = None,
                        batch_size: int | None = None, mini_batch_size: int | None = None) -> None:
    """Raise ValueError naming the flag at fault, before anything loads (shared by the CLI and `run()`)."""
    if algo not in ALGOS:
        raise ValueError(f"--algo must be one of {ALGOS}, got {algo!r}.")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {seed!r}.")
    for flag, value in (("--steps", steps), ("--batch-size", batch_size), ("--mini-batch-size", mini_batch_size)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{flag} must be a positive integer, got {value!r}.")
    batch = profile.ppo.batch_size if batch_size is None else batch_size
    mini = profile.ppo.mini_batch_size if mini_batch_size is None else mini_batch_size
    world = world_size()
    if world > 1 and algo == "ppo":
        raise ValueError(f"--algo ppo (the hand-built loop) runs in one process, but WORLD_SIZE={world}: start it with "
                         f"python, not torchrun or accelerate launch. --algo grpo|rloo scale out over processes.")
    check_batch_split(batch, mini, world, 2 if algo == "dpo" else 1, f"--algo {algo}")
    if algo in ("grpo", "rloo"):
        from .trl_runs import NUM_GENERATIONS

        if mini % NUM_GENERATIONS[algo]:
            raise ValueError(f"--algo {algo} samples {NUM_GENERATIONS[algo]} completions per prompt: the "
                             f"mini-batch size ({mini}) must be a multiple of it.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.train", description=__doc__.split("\n")[0])
    parser.add_argument("--algo", required=True, choices=ALGOS,
                        help="ppo (hand-built), grpo or rloo (TRL), dpo (TRL, on preference pairs)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="course profile (default: $RLHF_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="episodes per step (default: the profile's)")
    parser.add_argument("--mini-batch-size", type=_positive_int, default=None, help="episodes per gradient step")
    parser.add_argument("--eval-every", type=_non_negative_int, default=0,
                        help="held-out evaluation every N steps (0: ends only)")
    parser.add_argument("--save-every", type=_non_negative_int, default=0,
                        help="checkpoint every N steps (0: never; ppo only)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (ppo); a finished run is left as is")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report-to", choices=TRACKERS, default="none",
                        help="experiment tracker (TRL's report_to; the hand-built loop logs through the same library)")
    args = parser.parse_args(argv)

    # Every check that needs no model happens here, before anything loads.
    if args.algo != "ppo" and (args.save_every or args.resume):
        parser.error("--save-every and --resume are supported for --algo ppo only.")
    from .profiles import get_profile

    profile = get_profile(args.profile)
    try:
        check_run_arguments(args.algo, profile, args.seed, args.steps, args.batch_size, args.mini_batch_size)
        check_tracker(args.report_to)
    except ValueError as error:
        parser.error(str(error))
    holder = output_holder(args.out) if is_main_process() else None  # under torchrun, rank 0 holds it for all
    if holder:
        raise OutputBusyError(busy_message(args.out, holder, "training run"))  # a fault, not a usage error
    status = run_status(args.out)
    if status == "finished" and not args.resume:
        parser.error(f"{args.out} holds a finished run (summary.json). Choose another --out; nothing was changed.")
    if status == "partial" and not args.resume:
        present = ", ".join(name for name in OUTPUT_FILES if (args.out / name).exists())
        if args.algo == "ppo":
            parser.error(f"{args.out} already holds a run ({present}). Pass --resume to continue it, or choose "
                         f"another --out.")
        parser.error(f"{args.out} already holds an unfinished run ({present}). TRL runs cannot resume: choose another "
                     f"--out (or delete this one once you no longer need it).")
    args.profile_obj = profile
    return args


class RunError(SettingError):
    """A run that must not start as asked (it would overwrite or misread what --out holds)."""


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the fields that differ between two run.json dicts."""
    found = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} was {a!r}, now {b!r}")
    return found


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _recorder(out: Path, reached: dict):
    """Append each step's record to metrics.jsonl and note the step reached (for the message of a fault)."""

    def record(r: dict) -> None:
        reached["step"] = r.get("step", reached["step"])
        _append(out / "metrics.jsonl", r)

    return record


POLICY_DIR = "policy"
"""Where a run saves its final policy, inside --out."""


def save_policy(folder: Path, model, tokenizer, value_head=None, card: str | None = None) -> Path:
    """The trained policy as a plain transformers folder: `save_pretrained` weights (safetensors) and tokenizer, the
    PPO value head beside them (`value_head.safetensors`, which transformers ignores), and a model card. Loads with
    `AutoModelForCausalLM.from_pretrained(folder)` or `pipeline("text-generation", model=folder)`, no course code.
    Written to a temporary folder and renamed, so a half-written policy never sits where a finished one would."""
    from .faults import write_bytes

    with atomic_write(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if value_head is not None:
            from safetensors.torch import save

            write_bytes(tmp / "value_head.safetensors",
                        save({k: v.detach().contiguous().cpu() for k, v in value_head.state_dict().items()}))
        if card:
            (tmp / "README.md").write_text(card)
    return folder


def _model_card(algo: str, profile: Profile, config, run_info: dict, before: dict, after: dict,
                command: list[str] | None) -> str:
    """A short model card: what was trained, on what, how, with what result, and the command that made it."""
    method = {"ppo": "PPO (the course's hand-built loop)", "grpo": "GRPO (TRL)", "rloo": "RLOO (TRL)",
              "dpo": "DPO (TRL), on preference pairs sampled from the initial policy"}[algo]
    rows = "\n".join(f"| {key} | {before[key]:.4g} | {after[key]:.4g} |" for key in
                      ("mean_reward", "positive_rate", "kl", "ref_perplexity"))
    made_by = shlex.join(command) if command else f"rlhf_helpers.train.run({algo!r}, profile={profile.name!r}, ...)"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [rlhf, {algo}, imdb, sentiment]
---
# {algo.upper()} policy from the RLHF course ({profile.name} profile)

{method}, trained to continue IMDB review prompts ({profile.prompt_min_tokens}-{profile.prompt_max_tokens} tokens)
positively. Reward: the POSITIVE logit of `{run_info['models']['reward']}`.
Initial policy and KL reference: `{run_info['models']['policy']}`.
Data: IMDB (`{run_info['data']}`). {config.steps} steps of {config.batch_size} episodes, seed {config.seed}; every
setting is in the run's `run.json`, one folder up.

Held-out evaluation, measured by the run that saved this folder, on its machine: {after.get('n_prompts', '?')} fixed
IMDB test prompts, the same sampling seed before and after.

| metric | before | after |
| --- | --- | --- |
{rows}

- Made with: `{made_by}`
- Evaluate it again, or beside another run: `python -m rlhf_helpers.evaluate --policy THIS_FOLDER`
- Load it: `AutoModelForCausalLM.from_pretrained("THIS_FOLDER")` or `pipeline("text-generation", model="THIS_FOLDER")`
- Share it: `model.push_to_hub("you/name")` and `tokenizer.push_to_hub("you/name")` (needs a Hugging Face token;
  not tested by the course, whose machines cannot reach the hub)
"""


def run(algo: str, profile: Profile, out: Path | str, seed: int = 0, steps: int | None = None,
        batch_size: int | None = None, mini_batch_size: int | None = None, eval_every: int = 0,
        save_every: int = 0, resume: bool = False, progress: bool = True, command: list[str] | None = None,
        report_to: str = "none") -> dict:
    """Train with `algo` on `profile` and write the run's files to `out`. Returns the summary.

    One writer per `out`: the run holds `out`'s lock for its lifetime, so a second run into it (another kernel, a
    terminal) is refused at once (`faults.OutputBusyError`). A fault on the way (Ctrl-C, a full disk, CUDA out of
    memory) is raised as a `faults.CourseError` whose message says what is intact and how to continue; `command` is
    the command line that started the run, quoted in that message (the CLI passes it). `report_to` names an
    experiment tracker (`rlhf_helpers.tracking`)."""
    from .data import check_imdb_source

    check_run_arguments(algo, profile, seed, steps, batch_size, mini_batch_size)
    check_tracker(report_to)
    out = Path(out)
    if run_status(out) == "finished":  # before the lock: a finished run is not touched at all
        return _finished(out, resume)
    check_imdb_source(profile)  # a damaged data file is named now, not after the models have loaded
    reached = {"step": 0, "of": steps or profile.ppo.steps}
    faults = _explain_faults(algo, out, reached, save_every, command,
                             mini_batch_size or profile.ppo.mini_batch_size, batch_size or profile.ppo.batch_size)
    if not is_main_process():  # under torchrun only the first process writes, and so only it holds the lock
        with faults:
            return _run(algo, profile, out, seed, steps, batch_size, mini_batch_size, eval_every, save_every, resume,
                        progress, reached, command, report_to)
    with hold_output(out, "training run"), faults:
        if run_status(out) == "finished":  # another process finished it while we waited to start
            return _finished(out, resume)
        return _run(algo, profile, out, seed, steps, batch_size, mini_batch_size, eval_every, save_every, resume,
                    progress, reached, command, report_to)


def _finished(out: Path, resume: bool) -> dict:
    if resume:
        print(f"{out} holds a finished run (summary.json): nothing to resume, nothing was changed.", flush=True)
        return json.loads((out / "summary.json").read_text())
    raise RunError(f"{out} holds a finished run (summary.json). Choose another --out; nothing was changed.")


def _continue_hint(algo: str, out: Path, save_every: int, command: list[str] | None) -> str:
    """What is intact in `out` and the command that continues it, for a run that stopped on a fault."""
    from .checkpoint import checkpoint_dirs

    if algo != "ppo":
        return (f"TRL runs keep no checkpoints, so nothing can be resumed: run the command again into another --out "
                f"(and delete {out} once you no longer need it).")
    if command:
        resume = shlex.join([*command, *([] if "--resume" in command else ["--resume"])])
    else:
        resume = "run(...) with the same arguments and resume=True"
    checkpoints = checkpoint_dirs(out)
    if checkpoints:
        step = json.loads((checkpoints[-1] / "state.json").read_text())["step"]
        return f"The last checkpoint, step {step}, is intact in {checkpoints[-1]}. Continue from it with: {resume}"
    if save_every:
        return (f"No checkpoint had been written yet (the first comes at step {save_every}). Start again with: "
                f"{resume} (with no checkpoint it starts from step 0).")
    return (f"This run writes no checkpoints (--save-every 0), so nothing can be resumed. Start again with: {resume} "
            f"(it starts from step 0); add --save-every N to make a long run resumable.")


@contextlib.contextmanager
def _explain_faults(algo, out: Path, reached: dict, save_every: int, command, mini_batch_size: int,
                    batch_size: int):
    """Turn Ctrl-C, a full disk, an unwritable --out and CUDA running out of memory into messages that say where the
    run stopped, what is intact and what to do."""
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        where = f"at step {reached['step']} of {reached['of']}" if reached["step"] else "before the first step"
        raise RunInterrupted(f"Interrupted {where} ({out}). "
                             f"{_continue_hint(algo, out, save_every, command)}") from None
    except Exception as error:
        if is_disk_full(error):
            raise OutputWriteError(f"{disk_full_message(out, error)} The run stopped at step {reached['step']} of "
                                   f"{reached['of']}. {_continue_hint(algo, out, save_every, command)}") from error
        if is_out_of_memory(error):
            raise OutOfMemoryError(
                f"CUDA ran out of memory at step {reached['step']} of {reached['of']} (--algo {algo}, --batch-size "
                f"{batch_size}, --mini-batch-size {mini_batch_size}). Lower --mini-batch-size (try "
                f"{max(1, mini_batch_size // 2)}: the update's memory grows with it), or --batch-size for the "
                f"rollout. {_continue_hint(algo, out, save_every, command)}") from error
        cannot_write = isinstance(error, (PermissionError, NotADirectoryError, IsADirectoryError)) or (
            isinstance(error, OSError) and error.errno == errno.EROFS)
        if cannot_write and is_under(error.filename, out):
            raise OutputWriteError(unwritable_message(out, error)) from error
        raise


def _run(algo, profile, out, seed, steps, batch_size, mini_batch_size, eval_every, save_every, resume, progress,
         reached, command, report_to) -> dict:
    import pandas as pd
    from transformers import set_seed

    from .data import build_prompt_dataset, heldout_prompts, imdb_source
    from .evaluation import evaluate
    from .models import load_policy, load_reward, load_tokenizer, model_ids
    from .plots import plot_training_curves

    start = time.perf_counter()
    status = run_status(out)
    if status == "partial" and not resume:
        raise RunError(f"{out} already holds a run. Pass --resume to continue it, or choose another --out.")
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size,
                                   "mini_batch_size": mini_batch_size}.items() if v is not None}
    config = dataclasses.replace(profile.ppo, seed=seed, **overrides)
    run_info = {"algo": algo, "profile": profile.name, "config": dataclasses.asdict(config),
                "data": imdb_source(profile), "models": dict(zip(("policy", "reward"), model_ids(profile)))}
    if status == "partial" and (out / "run.json").is_file():
        saved = json.loads((out / "run.json").read_text())
        saved.pop("trainer", None)  # written by the trainer once it is built: not an argument of the command
        differences = _differences(saved, run_info)
        if differences:
            raise RunError(f"{out} holds a run that this command would not continue faithfully: "
                           f"{'; '.join(differences)}. Resume it with the same arguments and environment, or choose "
                           f"another --out.")
    if command is not None:  # the CLI's log says what it ran on; a notebook printed it in its first cell
        print(profile.describe(), flush=True)

    set_seed(config.seed)
    tokenizer = load_tokenizer(profile)
    policy, reference = load_policy(profile), load_policy(profile)
    reward = load_reward(profile)
    prompts = build_prompt_dataset(profile, tokenizer, split="train", seed=config.seed)[:]  # columns as lists
    heldout = heldout_prompts(profile, tokenizer)
    # The run really starts here: only now is --out marked as holding it (a start that failed while loading
    # leaves nothing that blocks the corrected command).
    main_process = is_main_process()
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "run.json", json.dumps(run_info, indent=2))

    def evaluate_fn(model):
        return evaluate(model, reference, tokenizer, reward, heldout, config.gen_min_tokens, config.gen_max_tokens,
                        config.temperature, profile.eval_batch_size)

    if algo == "ppo":
        history, evals, before, before_samples, wall_before, value_head = _train_ppo(
            config, out, policy, reference, tokenizer, reward, prompts["input_ids"], evaluate_fn, eval_every,
            save_every, resume, progress, start, reached, MetricLogger(report_to if main_process else "none", out,
                                                                        run_info))
        model = policy
    elif algo == "dpo":
        history, evals, before, before_samples, model = _train_dpo(
            profile, config, out, policy, reference, tokenizer, reward, prompts["input_ids"], evaluate_fn, eval_every,
            reached, report_to)
        wall_before = 0.0
    else:
        history, evals, before, before_samples, model = _train_trl(
            algo, profile, config, out, policy, tokenizer, reward, prompts["query"], evaluate_fn, eval_every, reached,
            report_to)
        wall_before = 0.0
    if algo != "ppo":
        value_head = None
    after_eval = evaluate_fn(model)
    after = after_eval.metrics
    train_seconds = (history[-1]["train_seconds"] if history else 0.0)
    evals.append({"round": config.steps, "episodes": history[-1]["episodes"], "train_seconds": train_seconds,
                  **after})
    summary = {"algo": algo, "profile": profile.name, "seed": config.seed, "steps": config.steps,
               "episodes": history[-1]["episodes"], "before": before, "after": after,
               "train_seconds": train_seconds, "wall_seconds": wall_before + time.perf_counter() - start,
               "policy": POLICY_DIR}
    if not main_process:
        return summary
    save_policy(out / POLICY_DIR, model, tokenizer, value_head, card=_model_card(algo, profile, config, run_info,
                                                                                 before, after, command))
    # Each result is written under a temporary name and renamed; summary.json comes last, so a run that dies while
    # writing its results is "partial", never "finished".
    write_text_atomic(out / "eval.jsonl", "".join(json.dumps(e) + "\n" for e in evals))

    samples = pd.DataFrame({"prompt": before_samples["prompt"],
                            "response_before": before_samples["response"], "reward_before": before_samples["reward"],
                            "response_after": after_eval.samples["response"],
                            "reward_after": after_eval.samples["reward"]})
    with atomic_write(out / "samples.csv") as tmp:
        samples.to_csv(tmp, index=False)
    if algo == "dpo":
        from .plots import plot_dpo_curves

        fig = plot_dpo_curves(history, evals, f"{algo} · {profile.name}")
    else:
        fig = plot_training_curves(history, f"{algo} · {profile.name}", before, after,
                                   kl_target=config.kl_target if algo == "ppo" else None)
    import matplotlib.pyplot as plt

    try:
        with atomic_write(out / "curves.png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _train_ppo(config, out, policy, reference, tokenizer, reward, prompt_ids, evaluate_fn, eval_every, save_every,
               resume, progress, start, reached, tracker):
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
        tracker.log(evals[0], 0, "eval")
    # Rewrite the metrics log from the checkpoint, dropping steps after it that a killed run had logged.
    write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
    reached["step"] = state.step

    def on_step(record: dict) -> None:
        reached["step"] = record["step"]
        previous = state.history[-2]["train_seconds"] if len(state.history) > 1 else 0.0
        record["train_seconds"] = previous + record["time_step"]
        _append(out / "metrics.jsonl", record)
        tracker.log(record, state.step)
        if eval_every and state.step % eval_every == 0 and state.step < config.steps:
            evals.append({"round": state.step, "episodes": record["episodes"],
                          "train_seconds": record["train_seconds"], **evaluate_fn(policy).metrics})
            tracker.log(evals[-1], state.step, "eval")
        if save_every and state.step % save_every == 0 and state.step < config.steps:
            save_checkpoint(state, out, extra={"before": before, "before_samples": before_samples.to_dict("list"),
                                               "evals": evals, "wall": wall_before + time.perf_counter() - start})

    try:
        history = train(state, on_step=on_step, progress=progress)
    finally:
        tracker.close()
    return history, evals, before, before_samples, wall_before, state.value_head


def _train_trl(algo, profile, config, out, policy, tokenizer, reward, prompt_texts, evaluate_fn, eval_every, reached,
               report_to):
    import tempfile

    from .trl_runs import trl_config

    # TRL wants an output_dir; the course saves nothing there (save_strategy="no"), so a scratch folder that is
    # removed afterwards.
    with tempfile.TemporaryDirectory(prefix=f"{algo}-") as scratch:
        args = trl_config(algo, profile, scratch, seed=config.seed, rounds=config.steps, batch_size=config.batch_size,
                          mini_batch_size=config.mini_batch_size,
                          report_to=report_to if is_main_process() else "none")
        return _train_trl_in(algo, config, out, policy, tokenizer, reward, prompt_texts, evaluate_fn,
                             eval_every, reached, args)


TRAINER_SETTINGS = ("learning_rate", "beta", "num_generations", "num_iterations", "steps_per_generation",
                    "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs",
                    "logging_steps", "max_completion_length", "temperature", "epsilon", "loss_type", "scale_rewards",
                    "normalize_advantages", "max_grad_norm", "lr_scheduler_type", "seed", "bf16")


def record_trainer_settings(out: Path, args) -> None:
    """Add the TRL trainer's settings, the derived ones included, to the run's run.json (under "trainer")."""
    info = json.loads((out / "run.json").read_text())
    info["trainer"] = {type(args).__name__: {name: getattr(args, name) for name in TRAINER_SETTINGS
                                             if hasattr(args, name)}}
    write_text_atomic(out / "run.json", json.dumps(info, indent=2, default=str))


def _train_trl_in(algo, config, out, policy, tokenizer, reward, prompt_texts, evaluate_fn, eval_every,
                  reached, args):
    from .trl_runs import CourseCallback, make_trl_trainer, sentiment_reward_func

    steps_per_round = args.steps_per_generation * args.num_iterations
    reward_func = sentiment_reward_func(reward)
    main_process = is_main_process()
    if main_process:
        (out / "metrics.jsonl").write_text("")
        record_trainer_settings(out, args)
    callback = CourseCallback(evaluate_fn, reward_func, steps_per_round, config.batch_size, eval_every,
                              on_record=_recorder(out, reached) if main_process else None)
    import warnings

    with trl_logging(args.report_to[0] if args.report_to else "none", out), warnings.catch_warnings():
        # completions cut to the course's 4-16-token lengths, as PPO trains and every method is evaluated
        trainer = make_trl_trainer(algo, policy, tokenizer, reward_func, prompt_texts, args, [callback],
                                   min_completion_length=config.gen_min_tokens)
        # TRL 1.16 calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer.train()
    return callback.history, callback.evals, callback.before.metrics, callback.before.samples, trainer.model


def _train_dpo(profile, config, out, policy, reference, tokenizer, reward, prompt_ids, evaluate_fn, eval_every,
               reached, report_to):
    """DPO on `steps × batch_size / 2` pairs from the initial policy (`dpo_samples_per_prompt` completions per
    prompt, ordered by the reward: see `dpo.dpo_pairs`), sampled once, up front."""
    import math
    import tempfile

    from .dpo import DPOCallback, dpo_config, make_dpo_trainer, pairs_for_run
    from .models import quiet_transformers

    sampling_start = time.perf_counter()
    pairs = pairs_for_run(config, policy, tokenizer, reward, prompt_ids)
    main_process = is_main_process()
    if main_process:
        (out / "metrics.jsonl").write_text("")
    with tempfile.TemporaryDirectory(prefix="dpo-") as scratch:
        args = dpo_config(profile, scratch, seed=config.seed, batch_size=config.batch_size,
                          mini_batch_size=config.mini_batch_size, beta=config.dpo_beta,
                          report_to=report_to if is_main_process() else "none")
        # A "round" is 1/steps of the run, so that metrics.jsonl has `steps` records; episodes count the completions
        # the pairs consumed so far were built from, and end at all that were sampled.
        total = math.ceil(len(pairs) / args.per_device_train_batch_size) * args.num_train_epochs
        args.logging_steps = max(1, total // config.steps)
        if main_process:
            record_trainer_settings(out, args)
        sampled = len(pairs) * config.dpo_samples_per_prompt  # completions, all drawn before training starts
        callback = DPOCallback(evaluate_fn, args.logging_steps, sampled // config.steps, eval_every,
                               on_record=_recorder(out, reached) if main_process else None,
                               sampling_seconds=time.perf_counter() - sampling_start)
        with trl_logging(report_to if is_main_process() else "none", out):
            trainer = make_dpo_trainer(policy, reference, tokenizer, pairs, args, [callback])
            with quiet_transformers():
                trainer.train()
    return callback.history, callback.evals, callback.before.metrics, callback.before.samples, trainer.model


def main(argv: list[str] | None = None) -> dict:
    """The CLI: expected faults print a few lines naming the file or setting and the fix, exit 2 (130 for Ctrl-C);
    RLHF_DEBUG=1 shows tracebacks."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda: _main(argv))


def _main(argv: list[str]) -> dict:
    args = parse_args(argv)
    summary = run(args.algo, args.profile_obj, args.out, seed=args.seed, steps=args.steps,
                  batch_size=args.batch_size, mini_batch_size=args.mini_batch_size, eval_every=args.eval_every,
                  save_every=args.save_every, resume=args.resume, progress=not args.no_progress,
                  command=["python", "-m", "rlhf_helpers.train", *argv], report_to=args.report_to)
    b, a = summary["before"], summary["after"]
    print(f"{args.algo}: positive {b['positive_rate']:.2f} -> {a['positive_rate']:.2f}, reward "
          f"{b['mean_reward']:+.3f} -> {a['mean_reward']:+.3f}, KL {a['kl']:.2f}, ref ppl {a['ref_perplexity']:.0f} "
          f"| {summary['episodes']} episodes, {summary['train_seconds']:.0f} s training, "
          f"{summary['wall_seconds']:.0f} s in all")
    return summary


if __name__ == "__main__":
    main()
