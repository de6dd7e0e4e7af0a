"""Supervised fine-tuning (SFT): where the policy comes from. Next-token cross-entropy on demonstrations, the response
tokens only, by hand and with TRL's `SFTTrainer`, on the same tokenized demonstrations.

A demonstration is a prompt and a response cut from a real IMDB review: the prompt as long as the course's prompts
(2-8 tokens), the response the review's next `response_tokens` tokens. The loss is the mean over every response
token of the batch (a token mean, as TRL computes it: a long response weighs more than a short one), never over the
prompt or the padding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from .data import check_imdb_source, filter_and_clean, heldout_prompts, heldout_reviews, load_imdb, prompt_lengths
from .evaluation import EVAL_SEED, continuation_words, evaluate, word_list
from .faults import explain_faults, hold_output, write_text_atomic
from .models import base_model_id, load_reward, load_tokenizer, model_ids, quiet_transformers
from .profiles import Profile
from .runs import write_results
from .spec import RunError, run_status


@dataclass(frozen=True)
class SFTSettings:
    """One SFT run's settings (notebook and `python -m rlhf_helpers.train --algo sft` share them)."""

    steps: int
    """Optimizer steps."""
    batch_size: int
    """Demonstrations per step."""
    learning_rate: float
    """Peak AdamW learning rate (TRL's default, 2e-5, is for fine-tuning large models for a few hundred steps; a
    1.7M-parameter model on a CPU budget needs a larger one, as the world's own fine-tuning used 1e-3)."""
    warmup_steps: int
    """Linear warm-up steps before the constant rate: Adam's first updates are full-size (notebook 05)."""
    response_tokens: int = 48
    """Most tokens of review after each prompt: a demonstration's response (the RL responses are 4-16 tokens; a
    longer response gives each step more text to learn from)."""
    response_min_tokens: int = 24
    """Fewest: each response's length is drawn between the two, so responses differ in length and the token mean
    weighs a long one more than a short one."""
    n_train: int = 8192
    """Demonstrations drawn from the train split."""
    n_heldout: int = 256
    """Demonstrations drawn from the test split, for the held-out loss."""
    eval_every: int = 20
    """Steps between held-out evaluations."""
    seed: int = 0
    """Seeds the demonstrations' prompt lengths, the batch order and the weights of any fresh head."""


SMOKE = SFTSettings(steps=120, batch_size=32, learning_rate=1e-3, warmup_steps=10)
"""The smoke profile: about a minute on one CPU core for the 1.7M-parameter base."""
HUB = SFTSettings(steps=2000, batch_size=16, learning_rate=5e-5, warmup_steps=100)
"""`gpu`/`cpu`: `openai-community/gpt2` toward the equivalent of `lvwerra/gpt2-imdb` (GPT-2 fine-tuned on IMDB)."""


def settings_for(profile: Profile) -> SFTSettings:
    return SMOKE if profile.offline else HUB


@dataclass
class Demonstrations:
    """Tokenized prompt/response pairs: `prompts[i]` and `responses[i]` are lists of token ids."""

    prompts: list[list[int]]
    responses: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows) -> Demonstrations:
        return Demonstrations([self.prompts[i] for i in rows], [self.responses[i] for i in rows])


def demonstrations(profile: Profile, tokenizer, split: str, n: int, response_tokens: int, seed: int = 0,
                   label: int | None = None, response_min_tokens: int | None = None) -> Demonstrations:
    """`n` demonstrations from the IMDB `split`: each review's first k tokens (k drawn in the profile's prompt range,
    seeded) as the prompt, its next m tokens as the response (m drawn in [`response_min_tokens`, `response_tokens`],
    seeded; all `response_tokens` when no minimum is given). Reviews too short for both are skipped; `label` (1
    positive, 0 negative) keeps only the reviews with that label."""
    data = filter_and_clean(load_imdb(split, profile))
    texts = data["text"] if label is None else [t for t, y in zip(data["text"], data["label"]) if y == label]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    lengths = prompt_lengths(len(order), profile.prompt_min_tokens, profile.prompt_max_tokens, seed)
    replies = prompt_lengths(len(order), response_min_tokens or response_tokens, response_tokens, seed + 1)
    prompts, responses = [], []
    for i, k, m in zip(order, lengths, replies):
        ids = tokenizer(texts[i][: 8 * (int(k) + response_tokens)], add_special_tokens=False, truncation=True,
                        max_length=int(k) + response_tokens)["input_ids"]
        if len(ids) < int(k) + response_tokens:
            continue
        prompts.append(ids[: int(k)])
        responses.append(ids[int(k): int(k) + int(m)])
        if len(prompts) == n:
            break
    if len(prompts) < n:
        raise ValueError(f"Only {len(prompts)} reviews of the {split} split are long enough for {n} demonstrations.")
    return Demonstrations(prompts, responses)


def sft_batch(demos: Demonstrations, pad_id: int, device=None) -> dict:
    """Prompt + response per row, **right**-padded (nothing is generated, so the tokens may start at position 0):
    `input_ids`, `attention_mask` and `response_mask` (1 on response tokens, 0 on prompt and padding), each (B, T)."""
    width = max(len(p) + len(r) for p, r in zip(demos.prompts, demos.responses))
    ids = torch.full((len(demos), width), pad_id, dtype=torch.long)
    attention, response = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, (prompt, reply) in enumerate(zip(demos.prompts, demos.responses)):
        ids[row, : len(prompt) + len(reply)] = torch.tensor(prompt + reply)
        attention[row, : len(prompt) + len(reply)] = 1
        response[row, len(prompt): len(prompt) + len(reply)] = 1
    return {key: value.to(device) if device is not None else value
            for key, value in {"input_ids": ids, "attention_mask": attention, "response_mask": response}.items()}


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the response tokens: the logits at position t predict the token at t + 1, so shift
    by one; average over every response token of the batch (prompt and padding excluded). logits (B, T, V),
    input_ids and response_mask (B, T) -> scalar."""
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(logits.dtype)
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                          reduction="none").view_as(mask)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def heldout_loss(model, demos: Demonstrations, pad_id: int, loss_fn=sft_loss, batch_size: int = 64) -> float:
    """The mean response-token loss over `demos` (token-weighted across batches), in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(demos), batch_size):
            batch = sft_batch(demos.subset(range(start, min(start + batch_size, len(demos)))), pad_id, model.device)
            count = int(batch["response_mask"][:, 1:].sum())
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            total += float(loss_fn(logits, batch["input_ids"], batch["response_mask"])) * count
            tokens += count
    model.train(was_training)
    return total / max(1, tokens)


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Each step's rows: passes over the `n` demonstrations in seeded shuffled orders, `batch_size` rows a step."""
    generator = torch.Generator().manual_seed(seed)
    flat: list[int] = []
    while len(flat) < steps * batch_size:
        flat += torch.randperm(n, generator=generator).tolist()
    return [flat[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def train_by_hand(model, train: Demonstrations, heldout: Demonstrations, pad_id: int, settings: SFTSettings,
                  loss_fn=sft_loss, steps: int | None = None, on_measure=None) -> list[dict]:
    """The SFT loop, plainly: AdamW (no weight decay) at `settings.learning_rate` after a linear warm-up, `loss_fn`
    on each batch of demonstrations, the held-out loss every `settings.eval_every` steps (and at the start and the
    end). Trains `model` in place; returns the log, one row per step (`loss`, and `heldout_loss` where measured).
    `on_measure(row, model)`, if given, is called after each held-out measurement (a benchmark evaluates there)."""
    steps = settings.steps if steps is None else steps
    # as TRL's run: AdamW without weight decay, and transformers' constant_with_warmup (the rate is 0 at step 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / max(1, settings.warmup_steps)))
    log = [{"step": 0, "heldout_loss": heldout_loss(model, heldout, pad_id, loss_fn)}]
    if on_measure:
        on_measure(log[0], model)
    model.train()
    start = time.perf_counter()
    for step, rows in enumerate(batch_order(len(train), steps, settings.batch_size, settings.seed), start=1):
        batch = sft_batch(train.subset(rows), pad_id, model.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = loss_fn(logits, batch["input_ids"], batch["response_mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        row = {"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start}
        if step % settings.eval_every == 0 or step == steps:
            row["heldout_loss"] = heldout_loss(model, heldout, pad_id, loss_fn)
            if on_measure:
                on_measure(row, model)
        log.append(row)
    model.eval()
    return log


def to_dataset(demos: Demonstrations):
    """The demonstrations as TRL's SFTTrainer takes them already tokenized: `input_ids` (prompt + response) and
    `completion_mask` (1 on the response). Tokenized, so TRL neither re-tokenizes the text nor appends an EOS (these
    responses are cut from the middle of reviews: an EOS would teach the model to stop there)."""
    return Dataset.from_dict({"input_ids": [p + r for p, r in zip(demos.prompts, demos.responses)],
                              "completion_mask": [[0] * len(p) + [1] * len(r)
                                                  for p, r in zip(demos.prompts, demos.responses)]})


def sft_config(settings: SFTSettings, output_dir: str, **overrides):
    """TRL's `SFTConfig` for the course's SFT: the loss on the response only (`completion_only_loss=True`: TRL's
    default, None, turns it on only for text datasets with prompt and completion columns; for these tokenized rows it
    would train on the prompt too), no packing (each demonstration is its own row: packing would let a
    response attend to another review), the course's learning rate, warm-up and batch, constant after the warm-up
    as `train_by_hand` is, no gradient clipping (the loop by hand has none), and nothing reported outside the run."""
    # TRL takes seconds to import: on first use, so that importing the course's SFT loss does not pay for it
    from trl import SFTConfig

    args = {"output_dir": output_dir, "max_steps": settings.steps, "per_device_train_batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate, "warmup_steps": settings.warmup_steps,
            "lr_scheduler_type": "constant_with_warmup", "max_grad_norm": 0.0, "completion_only_loss": True,
            "packing": False, "max_length": None, "seed": settings.seed, "report_to": [], "save_strategy": "no",
            "logging_steps": settings.eval_every, "use_cpu": not torch.cuda.is_available(),
            "dataloader_drop_last": True, "disable_tqdm": True}
    with quiet_transformers():  # TRL 1.16 touches transformers' deprecated gradient_checkpointing field
        return SFTConfig(**{**args, **overrides})


def make_sft_trainer(model, tokenizer, train: Demonstrations, args, heldout: Demonstrations | None = None):
    """TRL's `SFTTrainer` on the course's tokenized demonstrations (`to_dataset`)."""
    # TRL takes seconds to import: on first use
    from trl import SFTTrainer

    with quiet_transformers():
        trainer = SFTTrainer(model=model, args=args, train_dataset=to_dataset(train),
                             eval_dataset=to_dataset(heldout) if heldout is not None else None,
                             processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the course draws the curve; no dict printed every few steps
    return trainer


class HeldoutLoss(TrainerCallback):
    """Records `heldout_loss` on `demos` every `every` optimizer steps (and at the last) while TRL trains: the same
    curve `train_by_hand` logs, so the two runs are drawn on one axis."""

    def __init__(self, demos: Demonstrations, pad_id: int, every: int):
        self.demos, self.pad_id, self.every, self.log = demos, pad_id, every, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.log.append({"step": 0, "heldout_loss": heldout_loss(model, self.demos, self.pad_id)})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.log.append({"step": state.global_step, "heldout_loss": heldout_loss(model, self.demos, self.pad_id)})


class EvaluateAlong:
    """An `on_measure` for `train_by_hand`: the course's evaluation (`evaluation.evaluate`, the KL measured to
    `reference`) at each of `steps`; `points` holds each one's metrics and its step, `last` the last `Evaluation`.
    The evaluation samples under its own seed and puts the random state back, so the run trains as it would
    without it."""

    def __init__(self, reference, tokenizer, reward, prompts, sampling, steps):
        self.reference, self.tokenizer, self.reward, self.prompts, self.sampling = (reference, tokenizer, reward,
                                                                                    prompts, sampling)
        self.steps, self.points, self.last = set(steps), [], None

    def __call__(self, row: dict, model) -> None:
        if row["step"] in self.steps:
            self.last = evaluate(model, self.reference, self.tokenizer, self.reward, self.prompts, self.sampling)
            rewards = self.last.samples.reward
            rate = self.last.metrics["positive_rate"]
            self.points.append({"step": row["step"], **self.last.metrics,
                                "mean_reward_se": float(rewards.std() / len(rewards) ** 0.5),
                                "positive_rate_se": (rate * (1 - rate) / len(rewards)) ** 0.5})


def read_sft_curves(trl_log: list[dict], hand_log: list[dict], policy_loss: float) -> str:
    """Section 4's figure in a sentence: where TRL's run and the loop by hand took the held-out loss (each log's
    measured rows), whether TRL's was still falling at its last evaluation, and the course's policy's loss."""
    trl = [r for r in trl_log if "heldout_loss" in r]
    hand = [r for r in hand_log if "heldout_loss" in r]
    falling = len(trl) > 1 and trl[-1]["heldout_loss"] < trl[-2]["heldout_loss"]
    return (f"Held-out loss: TRL's run {trl[0]['heldout_loss']:.2f} -> {trl[-1]['heldout_loss']:.2f} in "
            f"{trl[-1]['step']} steps, " + ("still falling at its end" if falling else "no longer falling at its end") +
            f"; the loop by hand {hand[0]['heldout_loss']:.2f} -> {hand[-1]['heldout_loss']:.2f} in its "
            f"{hand[-1]['step']} steps, where TRL's run passed "
            f"{np.interp(hand[-1]['step'], [r['step'] for r in trl], [r['heldout_loss'] for r in trl]):.2f} (read "
            f"between its evaluations); the course's policy is at {policy_loss:.2f}.")


def review_vocabulary(profile: Profile) -> frozenset:
    """Every word (`evaluation.word_list`) of IMDB's train reviews: what `evaluation.unseen_word_rate` checks a
    writer's words against (real reviews score about 1 %)."""
    return frozenset(w for text in filter_and_clean(load_imdb("train", profile))["text"] for w in word_list(text))


def heldout_continuations(profile: Profile, tokenizer, prompts, sampling) -> list[str]:
    """The yardstick on the very prompts the models answer: for each held-out prompt (`data.heldout_prompts`), the
    review it was cut from, continued by its own next tokens, as many as the course's evaluation lets a sample have
    after that prompt (the length cap `sampling.sample_responses` draws under `evaluation.EVAL_SEED`)."""
    texts = heldout_reviews(profile, len(prompts))
    caps = torch.randint(sampling.min_tokens, sampling.max_tokens + 1, (len(prompts),),
                         generator=torch.Generator().manual_seed(EVAL_SEED)).tolist()
    continuations = []
    for text, ids, cap in zip(texts, prompts.input_ids, caps):
        tokens = tokenizer(text[: 40 * (len(ids) + cap + 8)], add_special_tokens=False, truncation=True,
                           max_length=len(ids) + cap)["input_ids"]  # only the tokens needed: no length warning
        if tokens[: len(ids)] != list(ids):
            raise ValueError("The held-out prompts are not the openings of the reviews they were drawn from: were they "
                             "made with another tokenizer or seed?")
        continuations.append(tokenizer.decode(tokens[len(ids): len(ids) + cap]))
    return continuations


def writer_row(model, tokenizer, prompts, vocabulary: frozenset, reward, sampling, demos: Demonstrations) -> tuple:
    """How well `model` writes reviews: its held-out loss on real continuations (`demos`) and perplexity, and, from
    the course's evaluation of it on the held-out prompts (`evaluation.evaluate`: one sample per prompt, the same
    seed as every evaluation of the course), the unseen-word rate and the reward's mean and positive rate, each with
    its standard error over the prompts. Returns (row, the evaluation's samples)."""
    loss = heldout_loss(model, demos, tokenizer.pad_token_id)
    result = evaluate(model, model, tokenizer, reward, prompts, sampling)
    row = text_row(list(result.samples.prompt), list(result.samples.response), result.samples.reward.to_numpy(),
                   vocabulary)
    return {"held-out loss (nats/token)": loss, "perplexity": math.exp(loss), **row}, result.samples


def _unseen_counts(prompts: list[str], responses: list[str], vocabulary: frozenset) -> tuple:
    words = [continuation_words(q, r) for q, r in zip(prompts, responses)]
    return (torch.tensor([sum(w not in vocabulary for w in ws) for ws in words], dtype=torch.float64),
            torch.tensor([len(ws) for ws in words], dtype=torch.float64))


def text_row(prompts: list[str], responses: list[str], rewards, vocabulary: frozenset) -> dict:
    """The unseen-word rate of `responses` after `prompts` and their `rewards`' mean and positive rate, each with its
    standard error over the prompts (the unseen-word rate's as a ratio of sums: words differ per response)."""
    unseen, counts = _unseen_counts(prompts, responses, vocabulary)
    rate = float(unseen.sum() / counts.sum().clamp(min=1))
    rate_se = float(((unseen - rate * counts) ** 2).sum().sqrt() / counts.sum().clamp(min=1))
    scores = torch.tensor(np.array(rewards, dtype=np.float64))  # a copy: the evaluation's frame stays read-only
    n = len(scores)
    positive = float((scores > 0).double().mean())
    return {"unseen-word rate": rate, "unseen-word rate SE": rate_se, "mean reward": float(scores.mean()),
            "mean reward SE": float(scores.std() / n ** 0.5), "positive rate": positive,
            "positive rate SE": (positive * (1 - positive) / n) ** 0.5, "prompts": n}


def unseen_change(prompts: list[str], before: list[str], after: list[str], vocabulary: frozenset) -> dict:
    """The change of the unseen-word rate from `before` to `after`, two writers' responses to the same `prompts`,
    with its **paired** standard error: per prompt, each rate's linearised contribution (unseen - rate x words) /
    total words, differenced, so what a prompt does to both writers cancels (the delta method for a difference of
    two ratios of sums). Returns `difference`, `se` and `z`."""
    u_a, c_a = _unseen_counts(prompts, before, vocabulary)
    u_b, c_b = _unseen_counts(prompts, after, vocabulary)
    rate_a, rate_b = float(u_a.sum() / c_a.sum().clamp(min=1)), float(u_b.sum() / c_b.sum().clamp(min=1))
    per_prompt = (u_b - rate_b * c_b) / c_b.sum().clamp(min=1) - (u_a - rate_a * c_a) / c_a.sum().clamp(min=1)
    se = float(per_prompt.pow(2).sum().sqrt())
    return {"difference": rate_b - rate_a, "se": se, "z": (rate_b - rate_a) / se if se > 0 else float("nan")}


def _moved(a: float, b: float, se_a: float, se_b: float) -> bool:
    """Whether two independent readings differ by more than twice the standard error of their difference."""
    return abs(b - a) > 2 * math.hypot(se_a, se_b)


def read_sft(rows: dict, base: str, tuned: str, longer: str | None = None, paired: dict | None = None,
             real: str | None = None) -> str:
    """Two or three sentences on `writer_row` rows (name -> row): what fine-tuning did to the held-out loss, to the
    unseen-word rate and to the reward, each change called one only beyond twice its standard error over the prompts
    (for the unseen-word rate the paired one, `paired` from `unseen_change`, when given), where the course's policy
    (`longer`, the base fine-tuned on reviews far longer) stands, and, when the reward did not move, where real review
    text (`real`, from `heldout_continuations`) scores."""
    b, t = rows[base], rows[tuned]
    if paired:
        unseen = abs(paired["z"]) > 2
    else:
        unseen = _moved(b["unseen-word rate"], t["unseen-word rate"], b["unseen-word rate SE"],
                        t["unseen-word rate SE"])
    noise = (f"paired over the same {t['prompts']} prompts: {paired['difference'] * 100:+.1f} ± "
             f"{paired['se'] * 100:.1f} points, one standard error, z = {paired['z']:.1f}"
             if paired else f"of {t['prompts']} samples")
    reward = _moved(b["mean reward"], t["mean reward"], b["mean reward SE"], t["mean reward SE"])
    direction = "rose" if t["unseen-word rate"] > b["unseen-word rate"] else "fell"
    text = (f"Fine-tuning took the held-out loss from {b['held-out loss (nats/token)']:.2f} to "
            f"{t['held-out loss (nats/token)']:.2f} nats per token (perplexity {b['perplexity']:.0f} -> "
            f"{t['perplexity']:.0f}); the unseen-word rate {direction} "
            f"{b['unseen-word rate']:.1%} -> {t['unseen-word rate']:.1%}, " + ("beyond" if unseen else "within") +
            f" its noise ({noise}), and the mean reward {b['mean reward']:+.2f} -> "
            f"{t['mean reward']:+.2f}, " + ("beyond" if reward else "within") + " its noise.")
    if longer:
        s = rows[longer]
        text += (f" The course's policy, fine-tuned far longer, is at {s['held-out loss (nats/token)']:.2f} nats and "
                 f"{s['unseen-word rate']:.1%} unseen: the loss falls first, real words take far more training.")
    if not reward:
        text += " SFT aims at the demonstrations, not at the reward"
        if real:
            r = rows[real]
            alike = not _moved(r["mean reward"], t["mean reward"], r["mean reward SE"], t["mean reward SE"])
            text += (f": real review text on the same prompts scores {r['mean reward']:+.2f} ± "
                     f"{r['mean reward SE']:.2f}, " + ("indistinguishable from the fine-tuned model's." if alike else
                                                       "apart from the fine-tuned model's beyond the noise."))
        else:
            text += "."
    return text


RISE = 0.02
"""Nats by which the held-out loss's mean of 5 evaluations must climb above its lowest before `read_sft_longer` calls
it a rise (the long run's loss wobbles by about 0.01 between evaluations near its end)."""


def read_sft_longer(longer: dict, rows: dict, tuned: str, policy: str, steps: int) -> str:
    """Section 5's second reading: this recipe run far longer (`longer`, the shipped `benchmarks/sft_longer.py`
    result) beside the run made here (`rows[tuned]`, `steps` long) and the course's policy (`rows[policy]`): where
    the long run's held-out loss and unseen-word rate ended, the first evaluation at which its unseen-word rate was at
    or below the policy's, and whether the run made here sits on the long run's curve (unseen-word rates within twice
    the standard error of their difference; one seed each)."""
    points, mine, target = longer["checkpoints"], rows[tuned], rows[policy]
    last = points[-1]
    reached = next((c for c in points if c["unseen-word rate"] <= target["unseen-word rate"]), None)
    text = (f"The same recipe run {last['step']:,} steps (about {last['seconds'] / 60:.0f} min on one CPU core, one "
            f"seed) took the held-out loss to {last['held-out loss (nats/token)']:.2f} nats and the unseen-word rate "
            f"to {last['unseen-word rate']:.1%}; ")
    apart = _moved(last["unseen-word rate"], target["unseen-word rate"], last["unseen-word rate SE"],
                   target["unseen-word rate SE"])
    text += (f"it was first at or below the course's policy's {target['unseen-word rate']:.1%} at step "
             f"{reached['step']:,}." if reached else
             f"it was still above the course's policy's {target['unseen-word rate']:.1%} at its end, " +
             ("beyond the noise." if apart else "though within the noise of the two."))
    settings = longer.get("settings")
    if settings and not reached:
        seen = settings["steps"] * settings["batch_size"] / settings["n_train"]
        text += (f" It repeats the openings of {settings['n_train']:,} reviews, each about {seen:.0f} times; the "
                 f"course's policy was trained on whole reviews, far more text.")
    start, peak = points[0], max(points, key=lambda c: c["unseen-word rate"])
    if peak["step"] > 0 and _moved(start["unseen-word rate"], peak["unseen-word rate"], start["unseen-word rate SE"],
                                   peak["unseen-word rate SE"]):
        under = next((c for c in points if c["step"] > peak["step"] and _moved(
            start["unseen-word rate"], c["unseen-word rate"], start["unseen-word rate SE"], c["unseen-word rate SE"])
            and c["unseen-word rate"] < start["unseen-word rate"]), None)
        text += (f" On the way its unseen-word rate first rose above the base's, to {peak['unseen-word rate']:.1%} at "
                 f"step {peak['step']:,} (the model mixes review sub-words before it spells review words), " +
                 ("and was below the base's beyond the noise only at its last evaluation."
                  if under is points[-1] else
                  f"and was below the base's, beyond the noise, from step {under['step']:,}." if under else
                  "and was never below the base's beyond the noise."))
    # the held-out loss wobbles by a few hundredths between evaluations: compare means of 5 in a row
    curve = longer.get("heldout_curve") or []
    windows = [(curve[i + 4]["step"], float(np.mean([r["heldout_loss"] for r in curve[i:i + 5]])))
               for i in range(len(curve) - 4)]
    if windows:
        lowest = min(windows, key=lambda w: w[1])
        if windows[-1][1] - lowest[1] > RISE:
            text += (f" Its held-out loss (a mean of 5 evaluations) was lowest at step {lowest[0]:,} "
                     f"({lowest[1]:.2f}) and rose {windows[-1][1] - lowest[1]:.2f} after: it had begun to memorise "
                     f"its demonstrations.")
    here = next((c for c in points if c["step"] == steps), None)
    if here:
        gap = mine["unseen-word rate"] - here["unseen-word rate"]
        se = math.hypot(mine["unseen-word rate SE"], here["unseen-word rate SE"])
        above = [_moved(start["unseen-word rate"], r["unseen-word rate"], start["unseen-word rate SE"],
                        r["unseen-word rate SE"]) and r["unseen-word rate"] > start["unseen-word rate"]
                 for r in (here, mine)]
        versus = ("both above the base's beyond the noise" if all(above) else
                  "yours above the base's beyond the noise, this run's within it" if above[1] else
                  "this run's above the base's beyond the noise, yours within it" if above[0] else
                  "neither above the base's beyond the noise")
        text += (f" At step {here['step']} this run (its demonstrations include yours, in another order, with the "
                 f"loop by hand) was at {here['held-out loss (nats/token)']:.2f} nats and "
                 f"{here['unseen-word rate']:.1%} unseen, yours at {mine['held-out loss (nats/token)']:.2f} and "
                 f"{mine['unseen-word rate']:.1%}: {abs(gap) * 100:.1f} points apart, {abs(gap) / se:.1f} standard "
                 f"errors (unpaired), {versus} ({start['unseen-word rate']:.1%}).")
    return text


def read_positive_sft(before: dict, after: dict, ppo_means: list[dict] | None, along: list[dict] | None = None) -> str:
    """Section 6's reading: fine-tuning on positive reviews only (`after`, evaluated against the policy it started
    from, `before`) beside PPO on the same reward at the same KL: `ppo_means`, the shipped frontier's PPO means over
    seeds at fixed KL coefficients (`frontier_smoke.json`'s `means` for algo "ppo"), joined from the starting policy
    by straight lines in KL. `along`: the SFT run's evaluations on the way (`EvaluateAlong.points`), each read against
    that line at its own KL, with the SFT reward's standard error over the prompts."""
    text = (f"Fine-tuning on positive reviews moved the mean reward {before['mean_reward']:+.2f} -> "
            f"{after['mean_reward']:+.2f} (positive rate {before['positive_rate']:.0%} -> "
            f"{after['positive_rate']:.0%}" +
            (f", standard error about {after['positive_rate_se']:.0%}" if "positive_rate_se" in after else "") +
            f") for a KL of {after['kl']:.1f} nats to the policy it started from")
    line = ppo_line(before, ppo_means)
    if len(line) < 2 or after["kl"] > line[-1]["kl"]:
        return text + "."

    def ppo_at(kl: float) -> float:
        return float(np.interp(kl, [p["kl"] for p in line], [p["mean_reward"] for p in line]))

    seeds = min(p.get("seeds", 1) for p in line[1:])
    text += (f"; PPO on the same reward at a fixed KL coefficient (the mean of {seeds} seeds per coefficient), read "
             f"at the same KL on the line through its means, reaches about {ppo_at(after['kl']):+.2f}.")
    if along:
        gaps = [ppo_at(p["kl"]) - p["mean_reward"] for p in along]
        where = " and ".join(f"{abs(g):.2f} {'below' if g > 0 else 'above'}" for g in gaps)
        beyond = sum(abs(g) > 2 * p["mean_reward_se"] for g, p in zip(gaps, along))
        ses = ", ".join(f"{p['mean_reward_se']:.2f}" for p in along)
        verdict = ("each within twice its standard error" if beyond == 0 else
                   "each beyond twice its standard error" if beyond == len(along) else
                   f"beyond twice its standard error at {beyond} of {len(along)}")
        text += (f" At its evaluations (steps {' and '.join(str(p['step']) for p in along)}) the SFT run sits {where} "
                 f"that line, {verdict} (standard errors over the prompts {ses}; one SFT run; PPO's spread over its "
                 f"seeds is not in this test).")
    return text + " Different budgets: this shows where each went, not which method is better at equal cost."


def ppo_line(before: dict, ppo_means: list[dict] | None) -> list[dict]:
    """The points `read_positive_sft` reads PPO on: the starting policy (KL 0) and PPO's means, by KL."""
    return sorted([{"kl": 0.0, "mean_reward": before["mean_reward"]}] + list(ppo_means or []), key=lambda p: p["kl"])


def train_with_trl(trainer) -> None:
    """`trainer.train()`, without transformers' deprecation chatter (TRL 1.16 reads a deprecated field)."""
    with quiet_transformers():
        trainer.train()


def trl_defaults() -> dict:
    """TRL's own `SFTConfig` defaults, read from the installed class's fields (what notebook 02 sets the course's
    beside); nothing is constructed, so no device check runs."""
    # TRL takes seconds to import: on first use
    from trl import SFTConfig

    return {f.name: f.default for f in dataclasses.fields(SFTConfig)}


def run_sft(spec, profile: Profile, out, command: list[str] | None = None) -> dict:
    """`python -m rlhf_helpers.train --algo sft`: the base model (`models.base_model_id`) fine-tuned with TRL's
    `SFTTrainer` as notebook 02 does, `spec.steps` optimizer steps of `spec.batch_size` demonstrations (default: the
    profile's `SFTSettings`). Writes, like every run: `policy/` (a transformers folder: point `RLHF_POLICY_MODEL` at
    it and every notebook and command starts from it), `metrics.jsonl` (the held-out loss along the run),
    `samples.csv` and `summary.json` (the course's evaluation before and after, the KL measured to the base)."""
    # trainers.py imports TRL's RL trainers (seconds): on first use, so that importing the SFT loss does not pay for it
    from .trainers import save_policy

    out = Path(out)
    if run_status(out) == "finished":
        raise RunError(f"{out} holds a finished run (summary.json). Choose another --out; nothing was changed.")
    check_imdb_source(profile)
    base = settings_for(profile)
    settings = dataclasses.replace(base, seed=spec.seed, steps=spec.steps or base.steps,
                                   batch_size=spec.batch_size or base.batch_size)
    where = {"stage": "loading the models"}
    faults = explain_faults(out, where=lambda: where["stage"],
                            next_step=lambda: "SFT runs keep no checkpoints: run the command again into another --out.",
                            memory=lambda: f"Lower --batch-size (it was {settings.batch_size}).")
    with hold_output(out, "training run"), faults:
        if run_status(out) not in ("empty", "missing"):
            raise RunError(f"{out} already holds a run. Choose another --out; nothing was changed.")
        start = time.perf_counter()
        tokenizer, reward, base_id = load_tokenizer(profile), load_reward(profile), base_model_id(profile)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(base_id, dtype=torch.float32).to(device).eval()
        reference = AutoModelForCausalLM.from_pretrained(base_id, dtype=torch.float32).to(device).eval()
        shape = {"response_tokens": settings.response_tokens, "response_min_tokens": settings.response_min_tokens}
        train = demonstrations(profile, tokenizer, "train", settings.n_train, seed=settings.seed, **shape)
        heldout_demos = demonstrations(profile, tokenizer, "test", settings.n_heldout, seed=settings.seed + 1, **shape)
        prompts = heldout_prompts(profile, tokenizer)
        before = evaluate(reference, reference, tokenizer, reward, prompts, profile.eval_sampling)
        where["stage"] = "while training"
        with tempfile.TemporaryDirectory(prefix="sft-") as scratch:
            trainer = make_sft_trainer(model, tokenizer, train, sft_config(settings, scratch))
            curve = HeldoutLoss(heldout_demos, tokenizer.pad_token_id, settings.eval_every)
            trainer.add_callback(curve)
            train_start = time.perf_counter()
            train_with_trl(trainer)
            train_seconds = time.perf_counter() - train_start
        model.eval()
        where["stage"] = "while evaluating and writing the run"
        after = evaluate(model, reference, tokenizer, reward, prompts, profile.eval_sampling)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in curve.log))
        summary = {"algo": "sft", "profile": profile.name, "seed": settings.seed, "steps": settings.steps,
                   "episodes": settings.steps * settings.batch_size, "settings": dataclasses.asdict(settings),
                   "base_model": base_id, "before": before.metrics, "after": after.metrics,
                   "heldout_loss": {"before": curve.log[0]["heldout_loss"], "after": curve.log[-1]["heldout_loss"]},
                   "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start, "policy": "policy",
                   "command": command, "reward_model": model_ids(profile).reward}
        save_policy(out / "policy", model, tokenizer, card=_card(summary))
        write_results(out, summary, before, after)  # summary.json last: it marks a finished run
    return summary


def _card(summary: dict) -> str:
    """The saved SFT policy's model card: what it was fine-tuned from, on what, and how it measured."""
    loss = summary["heldout_loss"]
    made_by = " ".join(summary["command"]) if summary["command"] else "rlhf_helpers.train.run(RunSpec('sft'), ...)"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [sft, imdb]
---
# SFT policy from the RLHF course ({summary['profile']} profile)

`{summary['base_model']}` fine-tuned with TRL's `SFTTrainer` on IMDB review continuations (the loss on the response
tokens only), {summary['steps']} steps of {summary['settings']['batch_size']} demonstrations, seed {summary['seed']}.
Held-out loss {loss['before']:.3f} -> {loss['after']:.3f} nats per response token. Use it as the starting policy of
every notebook and command: `RLHF_POLICY_MODEL=THIS_FOLDER`.

- Made with: `{made_by}`
- Evaluate it: `python -m rlhf_helpers.compare --policy THIS_FOLDER`
"""
