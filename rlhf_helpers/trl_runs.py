"""The same alignment with TRL's maintained online-RL trainers (`GRPOTrainer`, `RLOOTrainer`, TRL >= 1.13).

Settings are derived from the course profile so that a TRL run and the hand-built PPO run spend the same budget:

| course (PPO, notebook 05)          | GRPO / RLOO                                                       |
| ---------------------------------- | ----------------------------------------------------------------- |
| batch_size episodes per step       | one generation round: batch_size completions (prompts × G)        |
| mini_batch_size                    | per_device_train_batch_size; steps_per_generation = batch / mini |
| ppo_epochs passes over a batch     | num_iterations (>= 2: each completion trains several times)      |
| steps                              | max_steps = rounds × steps_per_generation × num_iterations        |
| cliprange ε                        | epsilon                                                           |
| init_kl_coef β                     | beta (TRL's default 0.0 drops the reference model altogether)     |
| learning_rate                      | learning_rate (TRL's default 1e-6 barely moves GPT-2)             |
| gen_max_tokens, plain sampling     | max_completion_length, top_k=0, top_p=1, temperature              |
| dropout off                        | disable_dropout=True (TRL's default leaves it on)                 |
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import pandas as pd
import torch
from transformers import TrainerCallback

from . import ppo
from .device import trl_precision, world_size
from .models import quiet_transformers
from .profiles import NUM_GENERATIONS, Profile, check_batch_split
from .sampling import position_ids_from_mask


def sentiment_reward_func(reward) -> Callable:
    """Wrap the course's `SentimentReward` as a TRL reward function.

    TRL calls it with the prompt and completion strings; it returns the POSITIVE logit of prompt + completion,
    chosen by label name. (Passing the classifier itself, or its hub id, as `reward_funcs` makes TRL load it as a
    1-output reward model and read index 0, which is NEGATIVE for lvwerra/distilbert-imdb; TRL issue #3269.)
    """

    def sentiment(prompts, completions, **kwargs) -> list[float]:
        sentiment.calls += len(completions)
        return reward([p + c for p, c in zip(prompts, completions)]).tolist()

    sentiment.calls = 0
    return sentiment


def group_relative_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """GRPO's advantages (Shao et al. 2024; TRL `scale_rewards="group"`): each completion's reward minus the mean
    of its prompt's group, divided by the group's (unbiased) std + 1e-4. Completions of one prompt are adjacent.
    (N,) -> (N,), N = prompts × group_size."""
    grouped = _grouped(rewards, group_size)  # (prompts, G)
    advantages = grouped - grouped.mean(1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(1, keepdim=True) + 1e-4)
    return advantages.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's advantages (Ahmadian et al. 2024): each completion's reward minus the mean reward of the *other*
    completions of its prompt. Unbiased, since the baseline never sees the sample it judges. (N,) -> (N,)"""
    grouped = _grouped(rewards, group_size)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"Need a 1-D tensor of rewards whose length ({tuple(rewards.shape)}) is a multiple of "
                         f"group_size >= 2 (got {group_size}).")
    return rewards.float().view(-1, group_size)


def trl_config(algo: str, profile: Profile, output_dir: str, seed: int = 0, rounds: int | None = None,
               batch_size: int | None = None, mini_batch_size: int | None = None, **overrides):
    """A GRPOConfig / RLOOConfig with the course's settings (see the module docstring)."""
    from trl import GRPOConfig, RLOOConfig

    cfg = profile.ppo
    batch = cfg.batch_size if batch_size is None else batch_size
    mini = cfg.mini_batch_size if mini_batch_size is None else mini_batch_size
    if batch <= 0 or mini <= 0:
        raise ValueError(f"{algo}: batch size ({batch}) and mini-batch size ({mini}) must be positive.")
    generations = NUM_GENERATIONS[algo]
    # Under torchrun / accelerate launch, each of the N processes takes mini / N of every gradient step, so a round
    # still spends `batch` completions and the budget does not change with the number of processes.
    processes = world_size()
    check_batch_split(batch, mini, processes, generations, algo)
    steps_per_generation = batch // mini
    num_iterations = max(2, cfg.ppo_epochs)
    rounds = cfg.steps if rounds is None else rounds
    common = dict(
        output_dir=output_dir, seed=seed, data_seed=seed,
        per_device_train_batch_size=mini // processes, steps_per_generation=steps_per_generation,
        num_generations=generations, num_iterations=num_iterations,
        max_steps=rounds * steps_per_generation * num_iterations,
        learning_rate=cfg.learning_rate, lr_scheduler_type="constant", max_grad_norm=cfg.max_grad_norm,
        beta=cfg.init_kl_coef, epsilon=cfg.cliprange,
        max_completion_length=cfg.gen_max_tokens, temperature=cfg.temperature, top_k=0, top_p=1.0,
        disable_dropout=True, activation_checkpointing=False, **trl_precision(),
        logging_steps=steps_per_generation * num_iterations, report_to="none", save_strategy="no",
        disable_tqdm=True,
    )
    if algo == "grpo":
        # "dapo": token-level mean over the whole batch, exactly `clipped_policy_loss` (see the correspondence test).
        return GRPOConfig(**{**common, "loss_type": "dapo", **overrides})
    if algo == "rloo":
        return RLOOConfig(**{**common, **overrides})
    raise ValueError(f"Unknown TRL algorithm {algo!r}; choose 'grpo' or 'rloo'.")


class CourseCallback(TrainerCallback):
    """Runs the course's `evaluate()` on the held-out prompts before training, every `eval_every` rounds and at
    the end, and turns TRL's logs into records like the hand-built loop's (one per generation round)."""

    def __init__(self, evaluate_fn: Callable, reward_func, steps_per_round: int, batch_size: int,
                 eval_every: int = 0, on_record: Callable | None = None):
        self.evaluate_fn, self.reward_func = evaluate_fn, reward_func
        self.steps_per_round, self.batch_size, self.eval_every = steps_per_round, batch_size, eval_every
        self.on_record = on_record
        self.processes = world_size()  # each process scores its share of a round
        self.history, self.evals = [], []
        self.start = time.perf_counter()
        self.train_seconds = 0.0  # excludes the evaluations, like the PPO runs' wall clock
        self._last = None

    def _episodes(self, round_: int) -> int:
        """Completions sampled so far (every process scores its share of a round)."""
        return self.reward_func.calls * self.processes

    def _evaluate(self, model, round_: int):
        t = time.perf_counter()
        evaluation = self.evaluate_fn(model)
        self.evals.append({"round": round_, "episodes": self._episodes(round_),
                           "train_seconds": self.train_seconds, **evaluation.metrics})
        self._last = time.perf_counter()
        return evaluation, time.perf_counter() - t

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before, _ = self._evaluate(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        now = time.perf_counter()
        self.train_seconds += now - self._last
        self._last = now
        round_, rem = divmod(state.global_step, self.steps_per_round)
        if self.eval_every and rem == 0 and round_ % self.eval_every == 0 and state.global_step < state.max_steps:
            self._evaluate(model, round_)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:
            return
        record = {
            "step": state.global_step // self.steps_per_round,
            "episodes": self.reward_func.calls * self.processes,
            "reward_mean": logs["reward"],
            "reward_std": logs.get("reward_std", float("nan")),
            "kl_per_token": logs.get("kl", float("nan")),
            "clipfrac": logs.get("clip_ratio/region_mean", float("nan")),
            "entropy": logs.get("entropy", float("nan")),
            "response_length": logs.get("completions/mean_length", float("nan")),
            "loss": logs.get("loss", float("nan")),
            "train_seconds": self.train_seconds,
        }
        self.history.append(record)
        if self.on_record:
            self.on_record(record)


def _cut_to_course_lengths(trainer, completion_ids: list[list[int]], logprobs=None):
    """Each completion cut at its own length drawn from [min_completion_length, max_completion_length], like the
    course's PPO rollouts and every method's evaluation (`sampling.sample_responses`). A prefix of a sample of π is a
    sample of π's prefix, so the update stays on-policy; the cut tokens never enter the loss or the reward."""
    low, high = trainer.course_min_completion_length, trainer.args.max_completion_length
    caps = torch.randint(low, high + 1, (len(completion_ids),), generator=trainer.course_length_generator).tolist()
    cut = [ids[:cap] for ids, cap in zip(completion_ids, caps)]
    if logprobs is not None:
        logprobs = [lp[:cap] for lp, cap in zip(logprobs, caps)]
    return cut, logprobs


def _course_length_trainer(base):
    """`base` (GRPOTrainer or RLOOTrainer) whose sampled completions are cut to the course's length distribution."""

    class CourseLengthTrainer(base):
        course_min_completion_length: int = 1
        course_length_generator: torch.Generator | None = None

        def _generate_single_turn(self, *args, **kwargs):
            out = super()._generate_single_turn(*args, **kwargs)
            if isinstance(out, tuple):  # GRPO: (completion_ids, logprobs)
                return _cut_to_course_lengths(self, *out)
            return _cut_to_course_lengths(self, out)[0]  # RLOO: completion_ids

    CourseLengthTrainer.__name__ = CourseLengthTrainer.__qualname__ = f"Course{base.__name__}"
    return CourseLengthTrainer


def positions_from_mask(model) -> torch.utils.hooks.RemovableHandle:
    """Make `model` derive its position ids from the attention mask whenever a caller passes none.

    GPT-2 numbers positions 0, 1, 2, ... from the left edge of the batch unless it is given `position_ids`. TRL's
    log-prob pass (`_get_per_token_logps_and_entropies`) passes only `input_ids` and `attention_mask`, so a
    left-padded prompt's first real token sits at position (padding), not 0, while `generate` sampled it at 0: the
    ratio and the KL are then computed on log-probs the sampler never used (notebook 03 measures the error). The
    hook fills in `sampling.position_ids_from_mask` for the rows' last `input_ids.shape[1]` positions (so cached
    generation steps get theirs too). Returns the handle; `.remove()` undoes it."""
    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None or mask is None:
            return args, kwargs
        ids = kwargs.get("input_ids", args[0] if args else None)
        width = (ids if ids is not None else kwargs["inputs_embeds"]).shape[1]
        kwargs["position_ids"] = position_ids_from_mask(mask)[:, -width:]
        return args, kwargs

    return model.register_forward_pre_hook(hook, with_kwargs=True)


MASK_POSITIONS = True
"""`make_trl_trainer` applies `mask_positions` (a fix of TRL's log-prob pass for GPT-2 with left padding). False
restores TRL's own behaviour, for the measurement of what the fix changes (benchmarks/grpo_positions.py)."""


def mask_positions(trainer) -> None:
    """`positions_from_mask` on a GRPO/RLOO trainer's policy and reference model: TRL's log-prob pass then scores each
    token at the position `generate` sampled it at."""
    for model in (trainer.model, trainer.ref_model):
        if model is not None:
            positions_from_mask(model)


def make_trl_trainer(algo: str, policy, tokenizer, reward_func, train_prompts: list[str], args, callbacks=(),
                     min_completion_length: int | None = None):
    """A GRPOTrainer or RLOOTrainer on the course's policy, prompt strings and reward function.

    With `min_completion_length`, every sampled completion is cut at a length drawn uniformly from
    [min_completion_length, args.max_completion_length] (seeded by `args.seed`): TRL then trains on the completion
    lengths the course's PPO trains on and every method is evaluated on (TRL alone samples each completion to the
    full length).

    TRL's log-prob pass scores each token at the position `generate` sampled it at (`mask_positions`)."""
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    from transformers.trainer_callback import PrinterCallback

    trainer_cls = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[algo]
    if min_completion_length is not None:
        if not 1 <= min_completion_length <= args.max_completion_length:
            raise ValueError(f"min_completion_length must be in [1, max_completion_length = "
                             f"{args.max_completion_length}], got {min_completion_length}.")
        trainer_cls = _course_length_trainer(trainer_cls)
    # `[:]`: a list, or a datasets Column read in one batch (from_dict would read a Column row by row: 3.8 s for
    # IMDB's 25,000 prompts)
    dataset = Dataset.from_dict({"prompt": list(train_prompts[:])})
    trainer = trainer_cls(model=policy, reward_funcs=reward_func, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=list(callbacks))
    if min_completion_length is not None:
        trainer.course_min_completion_length = min_completion_length
        trainer.course_length_generator = torch.Generator().manual_seed(args.seed)
    if MASK_POSITIONS:
        mask_positions(trainer)
    trainer.remove_callback(PrinterCallback)  # the course's callback logs each round instead of every raw dict
    return trainer


@torch.no_grad()
def compare_losses(trainer, tokenizer, prompts: list[str], seed: int = 0) -> dict:
    """TRL's own `_compute_loss` next to the course's functions, on the same random completions and advantages.

    GRPO (loss_type "dapo"): clipped_policy_loss(per-token) + beta · masked_mean(k3 [· ratio if
    use_bias_correction_kl]). RLOO: clipped_policy_loss on per-sequence log-probs (one "token" per response).
    """
    model = trainer.model.eval()  # eval mode: TRL normalizes by this batch's tokens alone
    g = torch.Generator().manual_seed(seed)
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    n, width = len(prompts), 5
    completion_ids = torch.randint(0, len(tokenizer), (n, width), generator=g)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    completion_mask = (torch.arange(width)[None] < lengths[:, None]).long()
    device = model.device
    inputs = {"prompt_ids": enc["input_ids"].to(device), "prompt_mask": enc["attention_mask"].to(device),
              "completion_ids": completion_ids.to(device), "completion_mask": completion_mask.to(device),
              "advantages": torch.randn(n, generator=g).to(device)}
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention, width)
    mask = inputs["completion_mask"].float()
    noise = lambda scale: scale * torch.randn(logps.shape, generator=g).to(device)  # noqa: E731
    args = trainer.args
    if hasattr(args, "loss_type"):  # GRPO
        inputs["old_per_token_logps"] = logps + noise(0.3)  # ratios away from 1, so the clip acts
        inputs["ref_per_token_logps"] = logps + noise(0.5)
        inputs["num_items_in_batch"] = mask.sum()
        trl_loss = trainer._compute_loss(model, inputs)
        ours, stats = ppo.clipped_policy_loss(logps, inputs["old_per_token_logps"],
                                              inputs["advantages"][:, None].expand_as(logps), mask, args.epsilon)
        if args.beta:
            k3 = ppo.kl_estimate(logps, inputs["ref_per_token_logps"], "k3")
            if args.use_bias_correction_kl:
                k3 = k3 * torch.exp(logps - inputs["old_per_token_logps"])
            ours = ours + args.beta * ppo.masked_mean(k3, mask)
    else:  # RLOO: one ratio per sequence
        sequence_logps = (logps * mask).sum(1)
        inputs["old_logps"] = sequence_logps + noise(0.3)[:, 0]
        trl_loss = trainer._compute_loss(model, inputs)
        ours, stats = ppo.clipped_policy_loss(sequence_logps[:, None], inputs["old_logps"][:, None],
                                              inputs["advantages"][:, None], torch.ones(n, 1, device=device),
                                              args.epsilon)
    return {"trl": trl_loss.item(), "course": ours.item(), "clipfrac": stats["clipfrac"]}


def compare_advantages(trainer, advantages_fn) -> dict:
    """One real generation round of a GRPO or RLOO trainer, then TRL's logged rewards through `advantages_fn(rewards,
    group_size)` (notebook 06 passes the learner's) next to the advantages TRL computed and trained on.

    The trainer must run exactly one round (`rounds=1` in `trl_config`): in the first round π = π_ref, so RLOO's KL
    term is 0 and its advantages are a function of the logged rewards alone."""
    args = trainer.args
    if args.max_steps != args.steps_per_generation * args.num_iterations:
        raise ValueError(f"compare_advantages needs a one-round trainer (max_steps {args.max_steps} == "
                         f"steps_per_generation × num_iterations): build it with trl_config(..., rounds=1).")
    if getattr(args, "normalize_advantages", False) or getattr(args, "scale_rewards", "group") != "group":
        raise ValueError("compare_advantages checks per-group advantages: build the trainer with the course's "
                         "trl_config (scale_rewards='group' for GRPO, normalize_advantages=False for RLOO).")
    with quiet_transformers(), warnings.catch_warnings():  # TRL 1.16's use of a deprecated transformers field
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer.train()
    rewards = torch.tensor(list(trainer._logs["rewards"][trainer.reward_func_names[0]]))
    theirs = torch.tensor(list(trainer._logs["advantages"]))
    ours = advantages_fn(rewards, args.num_generations).float().cpu()
    return {"completions": len(rewards), "advantages: max |TRL − yours|": (ours - theirs).abs().max().item()}


SPIKE_FACTOR = 5.0
"""A round whose logged KL is above this many times the run's median counts as a spike (notebook 06)."""


def read_grpo_round_logs(grpo_log, ppo_log, tails: dict, held_out_reward: float, gen_tokens: tuple[int, int]):
    """Notebook 06's three checks on a GRPO run: its logged KL per round (a spike?), its clipfrac beside the hand-built
    PPO's, and the length it trained on. `grpo_log`/`ppo_log`: the runs' `metrics.jsonl` as DataFrames; `tails`:
    `evaluation.per_token_kl_tails` of the trained policy on held-out prompts; `held_out_reward`: its evaluation's mean
    reward; `gen_tokens`: the profile's (min, max) response length. Returns (table, reading): a one-column table of
    the measurements and at most three sentences reading them."""
    logged = grpo_log.kl_per_token.reset_index(drop=True)
    median, peak, peak_round = logged.median(), logged.max(), int(logged.idxmax()) + 1
    spikes = int((logged > SPIKE_FACTOR * median).sum())
    clip_grpo, clip_ppo = grpo_log.clipfrac.mean(), ppo_log.clipfrac.mean()
    last = grpo_log.tail(5)
    table = pd.DataFrame({"value": {
        "logged KL/token, median": f"{median:.2f}",
        f"logged KL/token, round {peak_round}": f"{peak:.2f}",
        f"rounds > {SPIKE_FACTOR:g}× median": f"{spikes}",
        "held-out k3/token: median, mean, max": f"{tails['k3_median']:.3f}, {tails['k3_mean']:.2f}, "
                                               f"{tails['k3_max']:.1f}",
        "held-out k3: top 1 % tokens' share": f"{tails['k3_top1pct_share']:.0%}",
        "held-out KL/response (k1), this sample": f"{tails['kl_per_response']:.1f}",
        "clipfrac mean: GRPO, PPO": f"{clip_grpo:.2f}, {clip_ppo:.2f}",
        "GRPO length, last 5 rounds": f"{last.response_length.mean():.1f} (cut at {gen_tokens[0]}-{gen_tokens[1]})",
        "GRPO reward: train (last 5), held out": f"{last.reward_mean.mean():+.2f}, {held_out_reward:+.2f}"}})
    table.index.name = ("GRPO run (logged: TRL's k3 × π/π_old per round; held out: one new sample per prompt, so its "
                        "KL differs from the evaluation's by sampling noise)")
    if not spikes:
        spike = (f"No round's logged KL rose above {SPIKE_FACTOR:g}× the median: no spike on this run, although the "
                 f"largest 1 % of held-out tokens carry {tails['k3_top1pct_share']:.0%} of k3's sum.")
    else:
        after = logged.iloc[peak_round] if peak_round < len(logged) else None
        spike = (f"{spikes} round(s) logged more than {SPIKE_FACTOR:g}× the median KL, the largest {peak:.2f} in round "
                 f"{peak_round}: a few tokens the reference all but rules out, " +
                 ("in the last round." if after is None else
                  f"pulled back to {after:.2f} in the next round." if after < peak / 2 else
                  "not pulled back within a round."))
    clip = (f"clipfrac {clip_grpo:.2f} (GRPO) and {clip_ppo:.2f} (PPO) on average, GRPO's largest "
            f"{grpo_log.clipfrac.max():.2f} in round {int(grpo_log.clipfrac.reset_index(drop=True).idxmax()) + 1}: " +
            ("many tokens pass the clip every round, a step too big for it (notebook 05)."
             if max(clip_grpo, clip_ppo) > 0.1 else "a few percent, not the sign of a step too big for the clip "
             "(which, notebook 04 showed, does not bound how far a step goes)."))
    length = (f"GRPO trained on {last.response_length.mean():.1f} tokens a completion, cut like PPO's; its training "
              f"reward {last.reward_mean.mean():+.2f} is on its training prompts, {held_out_reward:+.2f} held out.")
    return table, [spike, clip, length]
