"""PPO by hand: the whole training loop, top to bottom, built only from `rlhf_helpers.ppo`.

One PPO step (`ppo_step`):
1. rollout   sample responses for a batch of prompts (plain sampling, 4-16 new tokens, EOS ends a row);
2. score     the sentiment reward of prompt + response (the POSITIVE logit);
3. forward   one pass of the policy gives old log-probs *and* values; one pass of the frozen reference;
4. rewards   -β·KL per token + the score on the last token; GAE; whitened advantages;
5. update    `ppo_epochs` passes over shuffled minibatches: clipped policy + vf_coef · clipped value loss,
             gradient clipping;
6. KL        the adaptive controller moves β toward the target KL.
Notebook 05 calls these same functions one by one; `train` runs them in a loop. References: Ziegler et al.
2019; Huang et al. 2023, "The N Implementation Details of RLHF with PPO" (cited below as "details #n").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from . import ppo
from .profiles import PPOConfig
from .device import autocast
from .sampling import PackedBatch, Samples, pack, response_logits, sample_responses


class ValueHead(nn.Module):
    """V(s_t) from the policy's last hidden state. Zero-initialised, so the first advantages are the plain
    returns and the value loss starts from an honest 'knows nothing' (details #8)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T)
        return self.summary(hidden.float()).squeeze(-1)


@dataclass
class TrainState:
    """Everything a PPO run carries from step to step (and what a checkpoint saves)."""

    config: PPOConfig
    policy: nn.Module
    value_head: ValueHead
    reference: nn.Module
    tokenizer: object
    reward: Callable
    prompts: list[list[int]]
    optimizer: torch.optim.Optimizer
    kl_ctl: ppo.AdaptiveKLController | ppo.FixedKLController
    generator: torch.Generator
    step: int = 0
    history: list = dataclasses.field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device


def make_state(config: PPOConfig, policy, reference, tokenizer, reward, prompts: list[list[int]]) -> TrainState:
    """Freeze the reference, attach a value head, build the optimizer and the KL controller."""
    torch.manual_seed(config.seed)
    device = next(policy.parameters()).device
    policy.eval()  # dropout off for the whole run: the ratio must be 1 before any update (details #20)
    reference.eval().requires_grad_(False)
    value_head = ValueHead(policy.config.hidden_size).to(device)
    # fused=True: one kernel for all parameters. On CPU, 124M parameters step in 0.05 s instead of 0.4 s, and the
    # loop takes 16 steps per batch (transformers' Trainer, hence TRL, uses fused AdamW by default too).
    optimizer = torch.optim.Adam([*policy.parameters(), *value_head.parameters()], lr=config.learning_rate,
                                 eps=1e-5, fused=device.type in ("cpu", "cuda"))
    kl_ctl = (ppo.AdaptiveKLController(config.init_kl_coef, config.kl_target, config.kl_horizon)
              if config.kl_target else ppo.FixedKLController(config.init_kl_coef))
    generator = torch.Generator().manual_seed(config.seed)
    return TrainState(config, policy, value_head, reference, tokenizer, reward, prompts, optimizer, kl_ctl,
                      generator)


def forward_logprobs_values(state: TrainState, batch: PackedBatch, with_entropy: bool = True):
    """One forward pass of the policy: response log-probs (B, T), values (B, T), entropy (B, T) or None.
    The entropy (a full-vocabulary reduction) is only logged, so the update's minibatches skip it."""
    # bf16 for the big matmuls only where the GPU has it natively (`device.autocast`); log-probs and values are
    # computed in float32 (details #12).
    with autocast(state.device):
        logits, hidden = response_logits(state.policy, batch, output_hidden_states=True)
    tokens = batch.response_ids.to(state.device)
    logprobs = ppo.logprobs_from_logits(logits, tokens, state.config.temperature)
    entropy = ppo.entropy_from_logits(logits.float() / state.config.temperature) if with_entropy else None
    return logprobs, state.value_head(hidden), entropy


@dataclass
class Rollout:
    """One batch of experience, with everything the update needs. Tensors are (B, T) unless noted."""

    samples: Samples
    batch: PackedBatch
    scores: torch.Tensor  # (B,)
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    entropy: float
    timings: dict


def next_prompts(state: TrainState) -> list[list[int]]:
    """A batch of training prompts, drawn with the run's own generator (so a resumed run draws the same)."""
    idx = torch.randint(len(state.prompts), (state.config.batch_size,), generator=state.generator)
    return [state.prompts[i] for i in idx.tolist()]


@contextmanager
def timed(timings: dict, phase: str):
    """Add the seconds the block takes to timings[phase] (the 'seconds per PPO step' plot of notebook 05)."""
    start = time.perf_counter()
    yield
    timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


@torch.no_grad()
def collect_rollout(state: TrainState, query_ids: list[list[int]], advantages_fn: Callable | None = None) -> Rollout:
    """Steps 1-4: generate, score, forward (policy + reference), per-token rewards, GAE.
    `advantages_fn` replaces step 4 (`rewards_and_advantages`, e.g. with the learner's own)."""
    cfg, timings = state.config, {}
    with timed(timings, "generate"):
        samples = sample_responses(state.policy, state.tokenizer, query_ids, cfg.gen_min_tokens, cfg.gen_max_tokens,
                                   temperature=cfg.temperature, batch_size=len(query_ids))
    with timed(timings, "score"):
        scores = state.reward(samples.texts).to(state.device)  # (B,), prompt + response
    with timed(timings, "forward"):
        batch = pack(samples.query_ids, samples.response_ids, state.tokenizer.pad_token_id).to(state.device)
        mask = batch.response_mask.float()
        logprobs, values, entropy = forward_logprobs_values(state, batch)
        with autocast(state.device):
            ref_logits, _ = response_logits(state.reference, batch)
        ref_logprobs = ppo.logprobs_from_logits(ref_logits, batch.response_ids, cfg.temperature)
    values = values * mask
    rewards, advantages, returns = (advantages_fn or rewards_and_advantages)(
        scores, logprobs, ref_logprobs, values, mask, state.kl_ctl.value, cfg.gamma, cfg.lam)
    return Rollout(samples, batch, scores, logprobs, ref_logprobs, values, rewards, advantages, returns, mask,
                   ppo.masked_mean(entropy, mask).item(), timings)


def rewards_and_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef: float, gamma: float,
                           lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 4: per-token rewards (-β·KL on each token, the score on the last), GAE, whitened advantages.

    (B,), then (B, T) each -> rewards, advantages, returns (B, T). Advantages are whitened over the batch
    (details #7) and zeroed again on padding; returns keep their scale (the value head regresses onto them).
    """
    rewards = ppo.per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)
    advantages, returns = ppo.compute_gae(rewards, values, mask, gamma, lam)
    advantages = ppo.masked_whiten(advantages, mask) * mask
    return rewards, advantages, returns


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """Step 6's input: KL per response (k1 summed over its tokens), averaged over the batch. (B, T) -> float.
    A sum, not a per-token mean: the classic target of 6 nats is per sequence."""
    return ((logprobs - ref_logprobs) * mask).sum(1).mean().item()


def select_rows(batch: PackedBatch, idx: torch.Tensor) -> PackedBatch:
    """The rows `idx` of a packed batch (a minibatch of the rollout)."""
    return PackedBatch(batch.input_ids[idx], batch.attention_mask[idx], batch.position_ids[idx],
                       batch.response_ids[idx], batch.response_mask[idx], batch.query_len)


def ppo_update(state: TrainState, rollout: Rollout) -> dict:
    """Step 5: `ppo_epochs` passes over shuffled minibatches of the rollout."""
    cfg = state.config
    stats = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approxkl": [], "vf_clipfrac": []}
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(cfg.batch_size, generator=state.generator)
        for first in range(0, cfg.batch_size, cfg.mini_batch_size):
            mb_idx = order[first:first + cfg.mini_batch_size].to(state.device)
            rows = select_rows(rollout.batch, mb_idx)
            logprobs, values, _ = forward_logprobs_values(state, rows, with_entropy=False)
            mask = rollout.mask[mb_idx]
            pg_loss, pg_stats = ppo.clipped_policy_loss(logprobs, rollout.logprobs[mb_idx],
                                                        rollout.advantages[mb_idx], mask, cfg.cliprange)
            vf_loss, vf_stats = ppo.clipped_value_loss(values, rollout.values[mb_idx], rollout.returns[mb_idx],
                                                       mask, cfg.cliprange_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*state.policy.parameters(), *state.value_head.parameters()],
                                           cfg.max_grad_norm)
            state.optimizer.step()
            for key, value in [("policy_loss", pg_loss.item()), ("value_loss", vf_loss.item()),
                               *pg_stats.items(), *vf_stats.items()]:
                stats[key].append(value)
    return {key: sum(v) / len(v) for key, v in stats.items()}


def ppo_step(state: TrainState) -> dict:
    """One full PPO step (1-6). Returns the step's log record. Notebook 05 writes this same step out as a cell,
    with the learner's functions in it; tests/test_ppo_loop_cell.py checks that the two train identically."""
    start, cfg = time.perf_counter(), state.config
    rollout = collect_rollout(state, next_prompts(state))
    with timed(rollout.timings, "update"):
        update = ppo_update(state, rollout)
    # Per-sequence KL of the rollout (k1 summed over tokens): what the controller steers toward its target.
    kl, kl_coef = sequence_kl(rollout.logprobs, rollout.ref_logprobs, rollout.mask), state.kl_ctl.value
    state.kl_ctl.update(kl, cfg.batch_size)
    state.step += 1
    return log_step(state, rollout, update, kl, kl_coef, start)


def log_step(state: TrainState, rollout: Rollout, update: dict, kl: float, kl_coef: float, start: float) -> dict:
    """The step's log record (what `metrics.jsonl` holds), appended to `state.history`. Logging only: nothing
    here changes the run."""
    residual_var = ppo.masked_var(rollout.returns - rollout.values, rollout.mask)
    record = {
        "step": state.step,
        "episodes": state.step * state.config.batch_size,
        "reward_mean": rollout.scores.mean().item(),
        "reward_std": rollout.scores.std().item(),
        "kl": kl,
        "kl_coef": kl_coef,
        **update,
        "entropy": rollout.entropy,
        "explained_variance": 1.0 - (residual_var / ppo.masked_var(rollout.returns, rollout.mask)).item(),
        "response_length": rollout.mask.sum(1).mean().item(),
        **{f"time_{k}": v for k, v in rollout.timings.items()},
        "time_step": time.perf_counter() - start,
        "samples": [{"prompt": q, "response": r, "reward": round(x, 4)} for q, r, x in
                    zip(rollout.samples.queries[:4], rollout.samples.responses[:4], rollout.scores[:4].tolist())],
    }
    state.history.append(record)
    return record


def train(state: TrainState, steps: int | None = None, on_step: Callable[[dict], None] | None = None,
          progress: bool = True, step: Callable[[TrainState], dict] | None = None) -> list[dict]:
    """Run `step` (PPO's, or notebook 05's own) until `steps` (default: the config's) are done, with a tqdm
    progress bar."""
    from tqdm.auto import tqdm

    total = steps or state.config.steps
    bar = tqdm(total=total, initial=state.step, desc="PPO", disable=not progress)
    while state.step < total:
        record = (step or ppo_step)(state)
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward_mean']:+.2f}", kl=f"{record['kl']:.2f}")
        if on_step is not None:
            on_step(record)
    bar.close()
    return state.history
