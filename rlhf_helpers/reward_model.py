"""From preferences to a reward model: Bradley–Terry labels, the loss by hand, training with TRL's RewardTrainer.

The setting follows Gao, Schulman & Hilton (2022), "Scaling laws for reward model overoptimization": a **gold judge**
plays the human. It scores completions, and a simulated rater prefers completion a over b with the Bradley–Terry
probability

    P(a ≻ b) = σ((g_a − g_b) / τ)

where g is the gold judge's score and τ the rater's noise (τ → 0: always the higher gold score; large τ: coin flips).
A **reward model** r_θ (the proxy) is then fit to the labelled pairs by maximising the same model's likelihood, i.e.
minimising the Bradley–Terry loss

    L(θ) = mean over pairs of −log σ(r_θ(chosen) − r_θ(rejected)).

The reward model is a pretrained network with a fresh one-number head (`AutoModelForSequenceClassification`,
`num_labels=1`). InstructGPT (Ouyang et al. 2022) initialises it from the supervised policy. At the `smoke` scale
that does not learn: from the 0.9M-parameter policy, 4,096 pairs (τ = 0.25) gave 52 % held-out agreement with the
gold judge, a coin flip. Initialised from the reward classifier's backbone (its 2-way head replaced), the same pairs
gave 78.5 % (measured on IMDB). Any folder saved with `save_pretrained` works as `init_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from transformers.trainer_callback import PrinterCallback
from trl import RewardConfig, RewardTrainer

from .device import trl_precision
from .models import quiet_transformers
from .profiles import Sampling
from .sampling import sample_with


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """mean(−log σ(r_chosen − r_rejected)); (B,), (B,) -> scalar. `logsigmoid` keeps large margins finite."""
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen and rejected rewards must pair up one to one, got shapes "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}.")
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def bradley_terry_labels(gold_a: torch.Tensor, gold_b: torch.Tensor, noise: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Simulated rater: True where a is preferred, drawn with P(a ≻ b) = σ((g_a − g_b) / noise).

    noise = 0 is the noiseless rater (a wins exactly when g_a > g_b)."""
    if noise < 0:
        raise ValueError(f"noise (the rater's temperature τ) must be >= 0, got {noise}.")
    if noise == 0:
        return gold_a > gold_b
    p = torch.sigmoid((gold_a - gold_b).float().cpu() / noise)
    return torch.rand(p.shape, generator=generator) < p


@dataclass
class PreferencePairs:
    """Labelled pairs: prompt, chosen and rejected completion, and the judge's scores behind the label (the gold
    judge's in notebook 07, the reward classifier's for DPO's pairs in notebook 08)."""

    prompt: list[str]
    chosen: list[str]
    rejected: list[str]
    gold_chosen: list[float]
    gold_rejected: list[float]
    sentiment_chosen: list[float] = field(default_factory=list)
    """The judge's sentiment behind `gold_chosen` when the labeller is a `GoldRater` (its score is this minus the
    repetition and fluency penalties); empty for a labeller without penalties."""
    sentiment_rejected: list[float] = field(default_factory=list)
    """The same for `gold_rejected`."""

    def __len__(self) -> int:
        return len(self.prompt)

    @property
    def penalty_share(self) -> float:
        """How much of the gold difference between a pair's two completions the gold rater's penalties make:
        mean |penalty(chosen) − penalty(rejected)| / mean |gold(chosen) − gold(rejected)| (the rest is sentiment)."""
        if not self.sentiment_chosen:
            raise ValueError("these pairs were labelled without a GoldRater: they hold no penalties to compare.")
        gold = torch.tensor(self.gold_chosen) - torch.tensor(self.gold_rejected)
        penalty = ((torch.tensor(self.sentiment_chosen) - torch.tensor(self.gold_chosen))
                   - (torch.tensor(self.sentiment_rejected) - torch.tensor(self.gold_rejected)))
        return (penalty.abs().mean() / gold.abs().mean()).item()

    @property
    def label_agrees_with_gold(self) -> float:
        """Share of pairs whose (noisy) label matches the noiseless gold preference."""
        return sum(c > r for c, r in zip(self.gold_chosen, self.gold_rejected)) / max(1, len(self))

    def subset(self, n: int) -> PreferencePairs:
        """The first `n` pairs (they come in prompt order, so this is a random subset of the prompts)."""
        return PreferencePairs(self.prompt[:n], self.chosen[:n], self.rejected[:n], self.gold_chosen[:n],
                               self.gold_rejected[:n], self.sentiment_chosen[:n], self.sentiment_rejected[:n])

    def to_dataset(self):
        """A `datasets.Dataset` in TRL's preference format (explicit prompt)."""
        return Dataset.from_dict({"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected})


def make_preference_pairs(policy, tokenizer, gold, query_ids: list[list[int]], noise: float,
                          sampling: Sampling = Sampling(batch_size=128), seed: int = 0,
                          samples_per_prompt: int = 2) -> PreferencePairs:
    """One pair per prompt: completions from `policy`, scored by `gold`, labelled by a Bradley–Terry rater of noise τ.

    With 2 completions per prompt the pair is those two (also DPO's pairs in notebook 08, where `gold` is the reward
    classifier and noise is 0); with more, it is `gold`'s best against its worst."""
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be >= 2 (a pair needs two completions), got {samples_per_prompt}.")
    k = samples_per_prompt
    repeated = [q for q in query_ids for _ in range(k)]
    samples = sample_with(policy, tokenizer, repeated, sampling, seed)
    if hasattr(gold, "components"):  # a GoldRater: keep the judge's sentiment too, so the penalties can be read
        parts = gold.components(samples.texts)
        scores = gold.score(parts).float().cpu().view(len(query_ids), k)  # what gold(texts) returns
        sentiment = parts["sentiment"].float().cpu().view(len(query_ids), k)
    else:
        scores = gold(samples.texts).float().cpu().view(len(query_ids), k)
        sentiment = None
    if k == 2:
        first, second = torch.zeros(len(query_ids), dtype=torch.long), torch.ones(len(query_ids), dtype=torch.long)
    else:
        first, second = scores.argmax(1), scores.argmin(1)
    rows = torch.arange(len(query_ids))
    a_wins = bradley_terry_labels(scores[rows, first], scores[rows, second], noise,
                                  torch.Generator().manual_seed(seed + 1))
    pairs = PreferencePairs([], [], [], [], [])
    for i, (a, b, win) in enumerate(zip(first.tolist(), second.tolist(), a_wins.tolist())):
        chosen, rejected = (a, b) if win else (b, a)
        pairs.prompt.append(samples.queries[i * k])
        pairs.chosen.append(samples.responses[i * k + chosen])
        pairs.rejected.append(samples.responses[i * k + rejected])
        pairs.gold_chosen.append(scores[i, chosen].item())
        pairs.gold_rejected.append(scores[i, rejected].item())
        if sentiment is not None:
            pairs.sentiment_chosen.append(sentiment[i, chosen].item())
            pairs.sentiment_rejected.append(sentiment[i, rejected].item())
    return pairs


class RewardModelScorer:
    """A trained reward model as the course's reward: texts in, one score per text out (on the model's device).

    Same interface as `SentimentReward`, so the PPO loop, `evaluate()` and best-of-n take either. Texts are
    right-padded: the model reads its score at the last real token, with position ids starting at 0."""

    def __init__(self, model, tokenizer, batch_size: int = 128):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, texts) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("Pass a non-empty list of strings to score.")
        eos = self.tokenizer.eos_token  # RewardTrainer appends EOS to every text it trains on
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t + eos for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(self.device)
            out.append(self.model(**enc).logits[:, 0].float())
        return torch.cat(out)


def fresh_reward_model(init_dir: str, seed: int = 0):
    """(model, tokenizer): `init_dir`'s network with a fresh one-number head (a classifier's 2-way head is replaced,
    not reused), right-padded, as `train_reward_model` trains it and notebook 07's by-hand loop does."""
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "right"
    set_seed(seed)  # the fresh head is drawn from the global generator: seed it, or the head depends on call order
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(init_dir, num_labels=1, use_safetensors=True,
                                                                   ignore_mismatched_sizes=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    # One score, not a 1-class classifier: transformers refuses to load a saved num_labels=1 model whose config still
    # says single_label_classification (RewardTrainer computes its own loss, so training is unchanged).
    model.config.problem_type = "regression"
    return model, tokenizer


def train_reward_model(init_dir: str, pairs: PreferencePairs, output_dir: str, epochs: int = 2, batch_size: int = 32,
                       learning_rate: float = 1e-3, seed: int = 0, eval_pairs: PreferencePairs | None = None):
    """Fit a scalar-head copy of `init_dir` (a pretrained network; see the module docstring) to `pairs` with TRL's
    RewardTrainer.

    Returns (trainer, scorer). The trainer's loss is `bradley_terry_loss` (see the correspondence test)."""
    model, tokenizer = fresh_reward_model(init_dir, seed)
    with quiet_transformers():
        args = RewardConfig(output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                            learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=10, seed=seed,
                            data_seed=seed, report_to="none", save_strategy="no", disable_tqdm=True,
                            logging_steps=10, max_length=64, center_rewards_coefficient=None,
                            **trl_precision(model.device))
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs.to_dataset(), processing_class=tokenizer,
                                eval_dataset=eval_pairs.to_dataset() if eval_pairs is not None else None)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer, RewardModelScorer(trainer.model, tokenizer)


@torch.no_grad()
def pair_accuracy(scorer, pairs: PreferencePairs) -> dict:
    """How often the reward model ranks a pair as the gold judge does without noise, and as the noisy label does."""
    chosen = scorer([p + c for p, c in zip(pairs.prompt, pairs.chosen)]).cpu()
    rejected = scorer([p + r for p, r in zip(pairs.prompt, pairs.rejected)]).cpu()
    gold_first = torch.tensor(pairs.gold_chosen) > torch.tensor(pairs.gold_rejected)
    ties = torch.tensor(pairs.gold_chosen) == torch.tensor(pairs.gold_rejected)
    model_first = chosen > rejected
    keep = ~ties
    return {"vs_gold": (model_first == gold_first)[keep].float().mean().item(),
            "vs_labels": model_first.float().mean().item(), "n_pairs": len(pairs),
            "bt_loss": bradley_terry_loss(chosen, rejected).item()}


def calibration_table(p_first, first_won, bins: int = 5):
    """Reward-model calibration on held-out pairs: `p_first` the model's σ(r_a − r_b) for the pair's first text,
    `first_won` 1 where the first is the (noisy) rater's choice. Per bin of equal width in p: the mean predicted
    probability, the observed share of wins, the number of pairs and the standard error of that share."""
    p, won = np.asarray(p_first, dtype=float), np.asarray(first_won, dtype=float)
    frame = pd.DataFrame({"p": p, "won": won, "bin": np.clip((p * bins).astype(int), 0, bins - 1)})
    table = frame.groupby("bin").agg(predicted=("p", "mean"), observed=("won", "mean"), pairs=("won", "size"))
    table["stderr"] = np.sqrt(table.observed.clip(0.05, 0.95) * (1 - table.observed.clip(0.05, 0.95)) / table.pairs)
    return table


def read_calibration(table) -> str:
    """One sentence on a `calibration_table`: the gap between predicted and observed, weighted by pairs; how many
    bins lie within twice their standard error of the diagonal; and whether the model is over- or under-confident
    (its probabilities further from, or nearer to, one half than the outcomes, weighted by pairs)."""
    weights = table.pairs / table.pairs.sum()
    gap = float((weights * (table.predicted - table.observed).abs()).sum())
    within = int(((table.predicted - table.observed).abs() <= 2 * table.stderr).sum())
    spread = float((weights * ((table.predicted - 0.5).abs() - (table.observed - 0.5).abs())).sum())
    lean = ("over-confident: its probabilities are further from one half than the outcomes" if spread > 0.02 else
            "under-confident: the outcomes are further from one half than its probabilities" if spread < -0.02 else
            "neither over- nor under-confident on average")
    return (f"Calibration: predicted and observed differ by {gap:.3f} on average (weighted by pairs), {within} of "
            f"{len(table)} bins within twice their standard error of the diagonal; the model is {lean}.")
