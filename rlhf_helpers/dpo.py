"""DPO: alignment without a reward model in the loop (Rafailov et al. 2023, "Direct Preference Optimization").

The KL-regularized objective of notebooks 04–07, max_π E[r(x, y)] − β·KL(π ‖ π_ref), has a closed-form optimum

    π*(y|x) = π_ref(y|x) · exp(r(x, y) / β) / Z(x)    ⇔    r(x, y) = β · log π*(y|x)/π_ref(y|x) + β · log Z(x).

Put that r into the Bradley–Terry likelihood of notebook 07: Z(x) cancels in r(chosen) − r(rejected), and the reward
model disappears. The policy is fit to the preference pairs directly:

    L_DPO = −log σ( β · [ (log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x)) ] )

with log π(y|x) the **sum** of the response tokens' log-probs. β · (log π − log π_ref) is the *implicit reward*.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers.trainer_callback import PrinterCallback
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer

from .data import heldout_prompts
from .device import trl_precision
from .models import quiet_transformers
from .profiles import PPOConfig, Profile, Sampling, check_batch_split
from .reward_model import make_preference_pairs
from .runs import RunInputs
from .sampling import pack, response_logprobs
from .trl_runs import CourseCallback


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sigmoid DPO loss per pair, and the implicit rewards.

        losses           = −log σ(β · [(π_c − ref_c) − (π_r − ref_r)])
        chosen_rewards   = β · (π_c − ref_c)        rejected_rewards = β · (π_r − ref_r)

    Inputs are sequence log-probs (sums over response tokens), each (B,); outputs are (B,) each. The reference is
    detached (it is frozen: no gradient may flow into it), and so are the rewards (they are for logging)."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps.detach()
    rejected_logratios = policy_rejected_logps - ref_rejected_logps.detach()
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))  # logsigmoid: finite at any margin
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def sequence_logps(model, query_ids, response_ids, pad_id: int, temperature: float = 1.0) -> torch.Tensor:
    """log π(response | query) summed over the response tokens, one per row: (B,) on the model's device.

    The same path as PPO's log-probs (left-padded prompts, position ids from the mask, `response_logits`), so DPO and
    PPO score a response identically. Gradients flow when called outside `torch.no_grad()`."""
    batch = pack(query_ids, response_ids, pad_id).to(next(model.parameters()).device)
    return (response_logprobs(model, batch, temperature) * batch.response_mask).sum(-1)


# ------------------------------------------------------------------------------------------- a DPO run with TRL


def dpo_pairs(policy, tokenizer, reward, prompt_ids: list[list[int]], n_prompts: int, samples_per_prompt: int = 2,
              sampling: Sampling = Sampling(batch_size=512), seed: int = 0):
    """Preference pairs for DPO, one per prompt: `samples_per_prompt` completions of the initial policy (prompts
    drawn with a seeded permutation). With 2 the pair is those two, the one the reward classifier scores higher
    chosen; with more, its best against its worst.

    Labelled by the **reward classifier**, not the gold judge: PPO and GRPO optimize that classifier and the frontier
    measures every method with it, so DPO learns the same preference the others are rewarded for. Two completions
    per pair keep DPO's budget equal to PPO's (`dpo_pair_count`); best against worst of more gives clearer winners
    at a larger budget (`benchmarks/README.md`, "How the DPO pairs were chosen").

    The pairs are text, and TRL tokenizes prompt + completion again. A prompt cut mid-word (the course's prompts are
    2-8-token prefixes of reviews) can merge with its completion's first token; TRL then starts the completion at
    the merged token, so that pair's log-ratios include the prompt's last piece. TRL warns about it; the course
    silences that warning (`models.quiet_transformers`)."""
    if n_prompts > len(prompt_ids):
        raise ValueError(f"{n_prompts} pairs need as many training prompts, but there are {len(prompt_ids)}.")
    order = torch.randperm(len(prompt_ids), generator=torch.Generator().manual_seed(seed))[:n_prompts].tolist()
    return make_preference_pairs(policy, tokenizer, reward, [prompt_ids[i] for i in order], noise=0.0,
                                 sampling=sampling, seed=seed, samples_per_prompt=samples_per_prompt)


def dpo_pair_count(config: PPOConfig) -> int:
    """Pairs of a DPO run: `steps × batch_size / 2`, one pair per two of PPO's episodes. With the profile's
    `dpo.samples_per_prompt` = 2 the pairs' completions are exactly PPO's `steps × batch_size` episodes, and with
    `dpo.epochs` = `ppo_epochs` the `pairs / (mini_batch_size / 2)` steps per pass make DPO's gradient steps PPO's
    (`steps × ppo_epochs × batch_size / mini_batch_size`): the frontier compares the methods at one budget."""
    return max(1, config.steps * config.batch_size // 2)


def pairs_for_run(inputs: RunInputs):
    """The pairs `run("dpo")` trains on: `dpo_pair_count(config)` of the run's training prompts, the profile's
    `dpo.samples_per_prompt` completions each at the run's lengths and temperature, the run's seed."""
    config = inputs.config
    return dpo_pairs(inputs.policy, inputs.tokenizer, inputs.reward, inputs.train_prompts["input_ids"],
                     dpo_pair_count(config), inputs.profile.dpo.samples_per_prompt, config.sampling(512),
                     seed=config.seed)


VALIDATION_PAIRS = 256
"""Pairs DPO's settings (learning rate, epochs) are chosen on: training-split prompts the run never trains on."""
HELDOUT_PAIRS = 512
"""Pairs a DPO run reports its held-out pair accuracy on: test-split prompts, drawn apart from the evaluation's. On
256 pairs twice a coin's standard error is 6.3 points, as wide as the accuracies the shipped world's DPO runs reach
(0.56-0.64 over the frontier's nine runs, 2026-12-06); 512 narrows it to 4.4."""
HELDOUT_PAIRS_SEED = 99
"""The held-out pairs' prompt draw (notebook 07's held-out pairs use the same)."""


def _pairs_on(inputs: RunInputs, prompt_ids: list[list[int]], seed: int):
    return make_preference_pairs(inputs.policy, inputs.tokenizer, inputs.reward, prompt_ids, noise=0.0,
                                 sampling=inputs.config.sampling(512), seed=seed,
                                 samples_per_prompt=inputs.profile.dpo.samples_per_prompt)


def validation_pairs(inputs: RunInputs, n: int = VALIDATION_PAIRS):
    """Pairs labelled like `pairs_for_run`'s, on the `n` training prompts that come next in its seeded draw: the run
    never trains on them, and the held-out evaluation prompts (test split) are never used to choose a setting.
    Call it before training: the completions come from `inputs.policy`."""
    config, prompt_ids = inputs.config, inputs.train_prompts["input_ids"]
    start = dpo_pair_count(config)
    order = torch.randperm(len(prompt_ids), generator=torch.Generator().manual_seed(config.seed)).tolist()
    if start + n > len(order):
        raise ValueError(f"{start + n} pairs need as many training prompts, but there are {len(order)}.")
    return _pairs_on(inputs, [prompt_ids[i] for i in order[start:start + n]], seed=config.seed + 1)


def heldout_pairs(inputs: RunInputs, n: int = HELDOUT_PAIRS):
    """Pairs labelled like `pairs_for_run`'s on `n` test-split prompts (their own draw, `HELDOUT_PAIRS_SEED`), for the
    held-out pair accuracy a DPO run reports. Call it before training."""
    prompts = heldout_prompts(inputs.profile, inputs.tokenizer, n=n, seed=HELDOUT_PAIRS_SEED)
    return _pairs_on(inputs, prompts.input_ids, seed=inputs.config.seed + 2)


def pair_metrics(trainer, pairs) -> dict:
    """TRL's own evaluation of a DPOTrainer's policy on `pairs`: the DPO loss, the share of pairs whose implicit
    reward ranks the chosen completion first, and the mean margin β·[(log π − log π_ref)_c − (…)_r]."""
    with quiet_transformers():
        metrics = trainer.evaluate(eval_dataset=pairs.to_dataset())
    return {"loss": metrics["eval_loss"], "accuracy": metrics["eval_rewards/accuracies"],
            "margin": metrics["eval_rewards/margins"], "n_pairs": len(pairs)}


def read_validation(curve: list[dict]) -> dict:
    """A DPO run's validation curve (`pair_metrics` by epoch, as `DPOCallback.validation` logs it) read for
    over-training: the epoch of the lowest validation loss, and how far the loss rose from there to the last epoch.
    `overtrained` when it rose by more than a hundredth of a nat."""
    if not curve:
        raise ValueError("No validation epochs: run DPO with eval_pairs (trainers do) to read its validation curve.")
    best = min(curve, key=lambda point: point["loss"])
    rise = curve[-1]["loss"] - best["loss"]
    return {"best_epoch": best["epoch"], "best_loss": best["loss"], "last_epoch": curve[-1]["epoch"],
            "last_loss": curve[-1]["loss"], "rise": rise, "overtrained": rise > 0.01}


def read_training_loss(history: list[dict]) -> str:
    """DPO's logged training loss read as a learner should: the mean over the first and the last quarter of the
    logged rounds, against how much one round's loss swings (its standard deviation over the run), so that a noisy
    curve of small batches is not mistaken for no learning, nor a lucky batch for progress."""
    losses = [h["loss"] for h in history]
    if len(losses) < 4:
        raise ValueError(f"{len(losses)} logged rounds: read_training_loss needs at least 4.")
    quarter = len(losses) // 4
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    mean = sum(losses) / len(losses)
    spread = (sum((x - mean) ** 2 for x in losses) / (len(losses) - 1)) ** 0.5
    moved = ("fell" if last < first else "rose") if abs(last - first) > spread / quarter ** 0.5 else "stayed level"
    return (f"Training loss: {first:.3f} over the first quarter of the {len(losses)} logged rounds, {last:.3f} over "
            f"the last (log 2 = 0.693 is a coin); one round's loss swings by {spread:.3f} (sd), so read the quarters, "
            f"not single rounds: it {moved}. Each round is a batch of pairs the policy has not trained on yet, so "
            "this is how well it generalises to the next batch, not how well it fits the pairs it has seen.")


NEAR_TIE = 0.005
"""Validation losses closer than this (nats) are called a near-tie: on one seed and 256 pairs the sweep cannot rank
them (the per-pair DPO loss varies by tenths of a nat, so its mean over 256 pairs moves by about a hundredth)."""


def read_lr_sweep(sweep: dict, learning_rate: float, epochs: int) -> str:
    """`benchmarks/dpo_learning_rate.py`'s sweep read in one or two sentences: its lowest validation loss, whether the
    profile trains at that choice, and the settings within `NEAR_TIE` of it (a near-tie on one seed, not a ranking)."""
    points = sorted(sweep["points"], key=lambda p: p["validation_loss"])
    best = points[0]
    chosen = (best["learning_rate"], best["epochs"]) == (learning_rate, epochs)
    text = (f"The sweep's lowest validation loss: {best['validation_loss']:.3f} at learning rate "
            f"{best['learning_rate']:g} after {best['epochs']} epoch(s), seed {sweep['seed']}; this profile trains at "
            f"{learning_rate:g} for {epochs}" + (", that choice." if chosen else ": not the sweep's choice."))
    near = [p for p in points[1:] if p["validation_loss"] - best["validation_loss"] < NEAR_TIE]
    if near:
        text += (" Within " + f"{NEAR_TIE:g} nats of it: " + ", ".join(
            f"{p['learning_rate']:g} after {p['epochs']} ({p['validation_loss']:.3f})" for p in near) +
            ": on one seed a near-tie, not a ranking; the choice buys the fewest passes.")
    return text


def pairs_beyond_chance(accuracy: float, n_pairs: int) -> bool:
    """True when a pair accuracy on `n_pairs` pairs exceeds a coin's 0.5 by more than twice a coin's standard error."""
    return accuracy > 0.5 + 2 * (0.25 / n_pairs) ** 0.5


def dpo_learning_rate(profile: Profile) -> float:
    """DPO's learning rate: the profile's `dpo.learning_rate`, else PPO's `learning_rate`."""
    return profile.ppo.learning_rate if profile.dpo.learning_rate is None else profile.dpo.learning_rate


def dpo_config(profile: Profile, output_dir: str, seed: int = 0, batch_size: int | None = None,
               mini_batch_size: int | None = None, **overrides):
    """TRL's DPOConfig with the profile's settings: its DPO learning rate (`dpo_learning_rate`), `dpo.epochs` passes
    over the pairs, `mini_batch_size / 2` pairs (two completions each) per gradient step, and DPO's β (`dpo.beta`)."""
    cfg = profile.ppo
    batch = cfg.batch_size if batch_size is None else batch_size
    mini = cfg.mini_batch_size if mini_batch_size is None else mini_batch_size
    check_batch_split(batch, mini, per=2, what="dpo")
    settings = dict(output_dir=output_dir, seed=seed, data_seed=seed, per_device_train_batch_size=mini // 2,
                    num_train_epochs=profile.dpo.epochs, learning_rate=dpo_learning_rate(profile),
                    lr_scheduler_type="constant", max_grad_norm=cfg.max_grad_norm, beta=profile.dpo.beta,
                    loss_type=["sigmoid"], disable_dropout=True,
                    logging_steps=batch // mini, report_to="none", save_strategy="no", disable_tqdm=True,
                    **trl_precision())
    with quiet_transformers():  # TRL 1.16 touches transformers' deprecated gradient_checkpointing field
        return TRLDPOConfig(**{**settings, **overrides})


class DPOCallback(CourseCallback):
    """`trl_runs.CourseCallback` (evaluations before, every `eval_every` rounds; training seconds) for a DPO run: a
    round is `steps_per_round` gradient steps, `episodes` counts the completions behind the pairs trained on so far
    (`episodes_per_round` per round), and each round's record holds the DPO loss, implicit rewards, preference
    accuracy and margin. `train_seconds` starts at `sampling_seconds`, the time spent sampling the pairs up front:
    those completions are DPO's episodes, so their cost is part of its training time, as PPO's rollouts are of its."""

    def __init__(self, evaluate_fn: Callable, steps_per_round: int, episodes_per_round: int, eval_every: int = 0,
                 on_record: Callable | None = None, sampling_seconds: float = 0.0):
        super().__init__(evaluate_fn, None, steps_per_round, episodes_per_round, eval_every, on_record)
        self.train_seconds = sampling_seconds
        self.validation = []
        """TRL's evaluation of the validation pairs at the end of each epoch (`pair_metrics`' fields, by epoch)."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._last = time.perf_counter()  # the evaluation is not training time
        if metrics and "eval_rewards/accuracies" in metrics:
            self.validation.append({"epoch": round(state.epoch or 0), "loss": metrics["eval_loss"],
                                    "accuracy": metrics["eval_rewards/accuracies"],
                                    "margin": metrics["eval_rewards/margins"]})

    def _episodes(self, round_: int) -> int:
        return round_ * self.batch_size

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "rewards/chosen" not in logs:
            return
        round_ = state.global_step // self.steps_per_round
        record = {"step": round_, "episodes": self._episodes(round_), "loss": logs["loss"],
                  "reward_chosen": logs["rewards/chosen"], "reward_rejected": logs["rewards/rejected"],
                  "reward_accuracy": logs["rewards/accuracies"], "reward_margin": logs["rewards/margins"],
                  "train_seconds": self.train_seconds}
        self.history.append(record)
        if self.on_record:
            self.on_record(record)


def make_dpo_trainer(policy, reference, tokenizer, pairs, args, callbacks=(), eval_pairs=None):
    """A TRL DPOTrainer on the course's policy, its frozen copy as the reference, and the pairs; with `eval_pairs`, TRL
    evaluates the policy on them at the end of every epoch (the validation curve: where more epochs stop helping)."""
    if eval_pairs is not None:
        args.eval_strategy = "epoch"
    with quiet_transformers():
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=pairs.to_dataset(),
                             eval_dataset=eval_pairs.to_dataset() if eval_pairs is not None else None,
                             processing_class=tokenizer, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    return trainer


# ------------------------------------------------------------------------------------------- online (iterative) DPO


def train_online_dpo(inputs: RunInputs, rounds: int = 4, scratch: str | None = None) -> dict:
    """Online (iterative) DPO: the same pairs budget as `pairs_for_run`, split into `rounds` rounds; each round
    samples its pairs from the **current** policy (`dpo.samples_per_prompt` completions per prompt, ordered by the
    reward, on prompts no earlier round used), then trains on them with TRL's DPOTrainer against the frozen initial
    reference (Xu et al. 2023, "Some things are more CRINGE than others"; Guo et al. 2024, "Direct language model
    alignment from online AI feedback"). Offline DPO is `rounds=1`. Each round starts a fresh optimizer.

    Trains `inputs.policy` in place and returns {"rounds", "pairs", "completions", "gradient_steps",
    "pair_accuracy"}."""
    profile, config, dpo = inputs.profile, inputs.config, inputs.profile.dpo
    policy, prompt_ids = inputs.policy, inputs.train_prompts["input_ids"]
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    total = max(rounds, dpo_pair_count(config))  # pairs, as pairs_for_run
    per_round = total // rounds
    order = torch.randperm(len(prompt_ids), generator=torch.Generator().manual_seed(config.seed)).tolist()
    if rounds * per_round > len(order):
        raise ValueError(f"{rounds * per_round} pairs need as many training prompts, but there are {len(order)}.")
    steps, accuracies = 0, []
    with tempfile.TemporaryDirectory(prefix="online-dpo-", dir=scratch) as tmp:
        for r in range(rounds):
            prompts = [prompt_ids[i] for i in order[r * per_round:(r + 1) * per_round]]
            pairs = dpo_pairs(policy, inputs.tokenizer, inputs.reward, prompts, len(prompts), dpo.samples_per_prompt,
                              config.sampling(512), seed=config.seed + 1000 * r)
            args = dpo_config(profile, tmp, seed=config.seed + r, batch_size=config.batch_size,
                              mini_batch_size=config.mini_batch_size)
            args.logging_steps = max(1, math.ceil(len(pairs) / args.per_device_train_batch_size))
            trainer = make_dpo_trainer(policy, inputs.reference, inputs.tokenizer, pairs, args)
            with quiet_transformers():
                trainer.train()
            steps += trainer.state.global_step
            logged = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
            accuracies.append(logged[-1]["rewards/accuracies"] if logged else float("nan"))
            policy = trainer.model
            policy.eval()
    return {"rounds": rounds, "pairs": rounds * per_round,
            "completions": rounds * per_round * dpo.samples_per_prompt, "gradient_steps": steps,
            "pair_accuracy": accuracies}
