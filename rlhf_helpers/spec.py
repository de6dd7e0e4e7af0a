"""What a training run is asked to do, and what its output folder holds: the light part of `train`, which the CLI
checks before anything slow is imported (transformers and TRL take seconds)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .device import world_size
from .faults import SettingError
from .profiles import NUM_GENERATIONS, PPOConfig, Profile, check_batch_split
from .tracking import check_tracker

ALGOS = ("ppo", "grpo", "rloo", "dpo", "sft")
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


def is_main_process() -> bool:
    """Only the first process writes the run's files; the others train and evaluate the same model alongside."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class RunSpec:
    """One training run as asked for: the CLI's flags, `run()`'s first argument. None: the profile's value."""

    algo: str
    """ppo (the hand-built loop), grpo or rloo (TRL), dpo (TRL, on preference pairs), sft (TRL's SFTTrainer: the
    base model fine-tuned on reviews, notebook 02)."""
    seed: int = 0
    """Seeds the models' new parts, the prompt order, sampling and shuffling."""
    steps: int | None = None
    """Training steps (PPO steps, GRPO/RLOO generation rounds, DPO: `steps` logged rounds)."""
    batch_size: int | None = None
    """Episodes per step."""
    mini_batch_size: int | None = None
    """Episodes per gradient step."""
    eval_every: int = 0
    """Held-out evaluation every this many steps (0: before and after only)."""
    save_every: int = 0
    """Checkpoint every this many steps (0: never; ppo only)."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (ppo); a finished run is left as it is."""
    report_to: str = "none"
    """Experiment tracker (`rlhf_helpers.tracking`)."""

    def check(self, profile: Profile) -> None:
        """Raise ValueError naming the flag at fault, before anything loads (the CLI and `run()` alike)."""
        if self.algo not in ALGOS:
            raise ValueError(f"--algo must be one of {ALGOS}, got {self.algo!r}.")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}.")
        for flag, value in (("--steps", self.steps), ("--batch-size", self.batch_size),
                            ("--mini-batch-size", self.mini_batch_size)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{flag} must be a positive integer, got {value!r}.")
        if self.algo == "sft":  # steps and --batch-size are SFT's own (optimizer steps, demonstrations per step)
            if self.mini_batch_size is not None:
                raise ValueError("--mini-batch-size does not apply to --algo sft: --batch-size is the demonstrations "
                                 "per optimizer step.")
            check_tracker(self.report_to)
            return
        batch = profile.ppo.batch_size if self.batch_size is None else self.batch_size
        mini = profile.ppo.mini_batch_size if self.mini_batch_size is None else self.mini_batch_size
        world = world_size()
        if world > 1 and self.algo == "ppo":
            raise ValueError(f"--algo ppo (the hand-built loop) runs in one process, but WORLD_SIZE={world}: start it "
                             f"with python, not torchrun or accelerate launch. --algo grpo|rloo scale out over "
                             f"processes.")
        check_batch_split(batch, mini, world, 2 if self.algo == "dpo" else 1, f"--algo {self.algo}")
        if self.algo in NUM_GENERATIONS and mini % NUM_GENERATIONS[self.algo]:
            raise ValueError(f"--algo {self.algo} samples {NUM_GENERATIONS[self.algo]} completions per prompt: the "
                             f"mini-batch size ({mini}) must be a multiple of it.")
        check_tracker(self.report_to)

    def config(self, profile: Profile) -> PPOConfig:
        """The profile's settings with this run's seed and sizes."""
        overrides = {k: v for k, v in {"steps": self.steps, "batch_size": self.batch_size,
                                       "mini_batch_size": self.mini_batch_size}.items() if v is not None}
        return dataclasses.replace(profile.ppo, seed=self.seed, **overrides)


class RunError(SettingError):
    """A run that must not start as asked (it would overwrite or misread what --out holds)."""
