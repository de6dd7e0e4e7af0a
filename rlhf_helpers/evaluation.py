"""Honest evaluation, shared by every training notebook and the headless runner.

The same fixed held-out prompts (from the test split) and the same sampling seed before and after training,
so "after" cannot win by drawing easier prompts or luckier samples. Reported:
- `mean_reward`: the mean POSITIVE logit of prompt + response;
- `positive_rate`: the share of samples with POSITIVE logit > 0;
- `kl`: mean over samples of Σ_t (log π - log π_ref), the per-sequence KL to the reference (k1; its expectation
  under the policy's own samples is the exact KL);
- `ref_perplexity`: exp of the reference model's mean negative log-likelihood of the response tokens (fluency as
  the untrained model judges it; reward hacking into gibberish shows up here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from .ppo import logprobs_from_logits
from .sampling import pack, response_logits, sample_responses

EVAL_SEED = 2024
METRICS = ("mean_reward", "positive_rate", "kl", "ref_perplexity")


@dataclass
class Evaluation:
    metrics: dict
    """mean_reward, positive_rate, kl, ref_perplexity, n_prompts."""
    samples: pd.DataFrame
    """prompt, response, reward, one row per held-out prompt."""


@torch.no_grad()
def sequence_logprobs(model, samples, pad_id: int, temperature: float = 1.0,
                      batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each response under `model`: (logprobs (N, T), mask (N, T)), on the model's device."""
    device = next(model.parameters()).device
    logprobs, masks = [], []
    width = max(len(r) for r in samples.response_ids)
    for start in range(0, len(samples), batch_size):
        batch = pack(samples.query_ids[start:start + batch_size], samples.response_ids[start:start + batch_size],
                     pad_id).to(device)
        logits, _ = response_logits(model, batch)  # float32 even on a GPU: the KL is a small difference
        lp = logprobs_from_logits(logits, batch.response_ids, temperature)
        pad = width - lp.shape[1]
        logprobs.append(torch.nn.functional.pad(lp, (0, pad)))
        masks.append(torch.nn.functional.pad(batch.response_mask.float(), (0, pad)))
    return torch.cat(logprobs), torch.cat(masks)


@torch.no_grad()
def evaluate(policy, reference, tokenizer, reward, prompts, gen_min: int = 4, gen_max: int = 16,
             temperature: float = 1.0, batch_size: int = 64, seed: int = EVAL_SEED) -> Evaluation:
    """Sample once per held-out prompt with a fixed seed, score, and measure KL and reference perplexity."""
    was_training = policy.training
    policy.eval()
    samples = sample_responses(policy, tokenizer, prompts.input_ids, gen_min, gen_max, temperature=temperature,
                               batch_size=batch_size, seed=seed)
    rewards = reward(samples.texts).cpu()
    logprobs, mask = sequence_logprobs(policy, samples, tokenizer.pad_token_id, temperature, batch_size)
    ref_logprobs, _ = sequence_logprobs(reference, samples, tokenizer.pad_token_id, temperature, batch_size)
    logprobs, ref_logprobs, mask = logprobs.cpu(), ref_logprobs.cpu(), mask.cpu()
    policy.train(was_training)
    kl = ((logprobs - ref_logprobs) * mask).sum(1).mean().item()
    ref_nll = -(ref_logprobs * mask).sum().item() / mask.sum().item()
    metrics = {"mean_reward": rewards.mean().item(), "positive_rate": (rewards > 0).float().mean().item(),
               "kl": kl, "ref_perplexity": math.exp(ref_nll), "n_prompts": len(samples)}
    table = pd.DataFrame({"prompt": samples.queries, "response": samples.responses, "reward": rewards.numpy()})
    return Evaluation(metrics, table)
