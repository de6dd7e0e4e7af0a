"""What every run needs, from one place: a profile and a seed turn into the tokenizer, the policy, its frozen
reference, the reward, the training prompts, the held-out prompts and the one evaluation every method is scored by.

`train.run` (every `--algo`), the frontier's own runs, the over-optimization study, the compare command and the
notebooks all start here, so that every number the course reports is measured the same way:

    inputs = RunInputs(profile, config)   # config: the run's PPOConfig (its seed, lengths, temperature)
    inputs.load()                         # seeds, then loads everything a training run uses, in a fixed order
    before = inputs.evaluate(inputs.policy)

Each part loads on first use, so a study that needs no reward classifier never loads one. What a finished run leaves
behind (`samples_table`, `write_results`) is written here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
from transformers import set_seed

from .data import HeldoutPrompts, build_prompt_dataset, heldout_prompts
from .evaluation import Evaluation, evaluate
from .faults import atomic_write, write_text_atomic
from .models import load_gold, load_policy, load_reward, load_tokenizer
from .profiles import PPOConfig, Profile


@dataclass
class RunInputs:
    """The models and prompts of one run, each loaded on first use (see the module docstring)."""

    profile: Profile
    config: PPOConfig
    """The run's settings: its seed (prompt order, sampling), lengths and temperature."""
    n_heldout: int | None = None
    """Held-out prompts (default: the profile's `n_eval_prompts`)."""

    def load(self, *parts: str) -> RunInputs:
        """Seed everything from the run's seed, then load `parts` (default: what a training run uses) in order."""
        set_seed(self.config.seed)
        for part in parts or ("tokenizer", "policy", "reference", "reward", "train_prompts", "heldout"):
            getattr(self, part)
        return self

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.profile)

    @cached_property
    def policy(self):
        """The model being trained (in place): the profile's initial policy."""
        return load_policy(self.profile)

    @cached_property
    def reference(self):
        """The frozen initial policy that KL and reference perplexity are measured against."""
        return load_policy(self.profile)

    @cached_property
    def reward(self):
        """The sentiment classifier's POSITIVE logit: what the runs are trained for and scored by."""
        return load_reward(self.profile)

    @cached_property
    def gold(self):
        """The gold rater (notebook 07): never trained on, it scores what a run's samples are really worth."""
        return load_gold(self.profile)

    @cached_property
    def train_prompts(self) -> dict[str, list]:
        """The training prompts as columns of lists: `input_ids` (token ids) and `query` (their text)."""
        return build_prompt_dataset(self.profile, self.tokenizer, split="train", seed=self.config.seed)[:]

    @cached_property
    def heldout(self) -> HeldoutPrompts:
        """The fixed held-out test prompts of every evaluation."""
        return heldout_prompts(self.profile, self.tokenizer, n=self.n_heldout)

    def evaluate(self, model, reward=None) -> Evaluation:
        """The one evaluation: `model`'s samples of the held-out prompts at the run's lengths and temperature, the
        same sampling seed every time, scored by `reward` (default: the classifier), KL to the reference."""
        return evaluate(model, self.reference, self.tokenizer, reward or self.reward, self.heldout,
                        self.config.sampling(self.profile.eval_batch_size))


def samples_table(before: Evaluation, after: Evaluation) -> pd.DataFrame:
    """samples.csv: each held-out prompt with the response and reward before and after training."""
    return pd.DataFrame({"prompt": before.samples["prompt"],
                         "response_before": before.samples["response"], "reward_before": before.samples["reward"],
                         "response_after": after.samples["response"], "reward_after": after.samples["reward"]})


def write_results(out: Path, summary: dict, before: Evaluation, after: Evaluation) -> None:
    """samples.csv, then summary.json: each under a temporary name and renamed, summary.json last, so a run that
    dies while writing its results is "partial", never "finished"."""
    with atomic_write(out / "samples.csv") as tmp:
        samples_table(before, after).to_csv(tmp, index=False)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
