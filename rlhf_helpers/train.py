"""Headless training: the course's runs outside a notebook (a GPU server, a long job, CI).

    python -m rlhf_helpers.train --algo ppo --profile smoke --out runs/ppo-smoke
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20
    python -m rlhf_helpers.train --algo ppo --profile gpu --out runs/ppo-gpu --save-every 20 --resume
    python -m rlhf_helpers.train --algo grpo --profile smoke --out runs/grpo-smoke      # or --algo rloo
    python -m rlhf_helpers.train --algo dpo --profile smoke --out runs/dpo-smoke
    python -m rlhf_helpers.train --algo sft --profile smoke --out runs/sft-smoke       # RLHF_POLICY_MODEL=.../policy

Writes to --out: metrics.jsonl (one JSON object per step), summary.json (before/after evaluation on the fixed
held-out prompts, episodes, wall_seconds), samples.csv (prompt, response and reward before and after),
curves.png, eval.jsonl (held-out evaluations every --eval-every steps), and checkpoints/ when --save-every is set
(PPO). `run()` is the same code as a function; notebooks 05 and 06 call it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .faults import OutputBusyError, busy_message, output_holder, run_cli
from .profiles import PROFILE_NAMES, Profile, get_profile
from .spec import ALGOS, OUTPUT_FILES, RunError, RunSpec, is_main_process, run_status
from .tracking import TRACKERS

__all__ = ["ALGOS", "OUTPUT_FILES", "RunError", "RunSpec", "main", "parse_args", "run", "run_status"]


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.train", description=__doc__.split("\n")[0])
    parser.add_argument("--algo", required=True, choices=ALGOS,
                        help="ppo (hand-built), grpo or rloo (TRL), dpo (TRL, on preference pairs), sft (TRL's "
                             "SFTTrainer: the base model fine-tuned on reviews)")
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
    profile = get_profile(args.profile)
    spec = RunSpec(args.algo, args.seed, args.steps, args.batch_size, args.mini_batch_size, args.eval_every,
                   args.save_every, args.resume, args.report_to)
    try:
        spec.check(profile)
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
    args.spec, args.profile_obj = spec, profile
    return args


def run(spec: RunSpec, profile: Profile, out: Path | str, progress: bool = True,
        command: list[str] | None = None) -> dict:
    """Train as `spec` asks on `profile` and write the run's files to `out`. Returns the summary.

    One writer per `out`: the run holds `out`'s lock for its lifetime, so a second run into it (another kernel, a
    terminal) is refused at once (`faults.OutputBusyError`). A fault on the way (Ctrl-C, a full disk, CUDA out of
    memory) is raised as a `faults.CourseError` whose message says what is intact and how to continue; `command` is
    the command line that started the run, quoted in that message (the CLI passes it). See `trainers.py`."""
    if spec.algo == "sft":
        spec.check(profile)
        # Imported here for the same reason as below: SFT (the step before RL, from the base model) is its own run
        from .sft import run_sft

        return run_sft(spec, profile, Path(out), command)
    # Imported here, not at the top: transformers and TRL take about 4 s to import, and the CLI names a wrong flag
    # before that (1.6 s instead of 6 s, measured on 2 CPU cores).
    from .trainers import train_run

    return train_run(spec, profile, Path(out), progress, command)


def main(argv: list[str] | None = None) -> dict:
    """The CLI: expected faults print a few lines naming the file or setting and the fix, exit 2 (130 for Ctrl-C);
    RLHF_DEBUG=1 shows tracebacks."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda: _main(argv))


def _main(argv: list[str]) -> dict:
    args = parse_args(argv)
    summary = run(args.spec, args.profile_obj, args.out, progress=not args.no_progress,
                  command=["python", "-m", "rlhf_helpers.train", *argv])
    b, a = summary["before"], summary["after"]
    print(f"{args.algo}: positive {b['positive_rate']:.2f} -> {a['positive_rate']:.2f}, reward "
          f"{b['mean_reward']:+.3f} -> {a['mean_reward']:+.3f}, KL {a['kl']:.2f}, ref ppl {a['ref_perplexity']:.0f} "
          f"| {summary['episodes']} episodes, {summary['train_seconds']:.0f} s training, "
          f"{summary['wall_seconds']:.0f} s in all")
    return summary


if __name__ == "__main__":
    main()
