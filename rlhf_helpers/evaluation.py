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
import re
from collections import Counter
from dataclasses import dataclass

import pandas as pd
import torch

from .profiles import Sampling
from .sampling import pack, response_logprobs, sample_with

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
        lp = response_logprobs(model, batch, temperature)  # float32 even on a GPU: the KL is a small difference
        pad = width - lp.shape[1]
        logprobs.append(torch.nn.functional.pad(lp, (0, pad)))
        masks.append(torch.nn.functional.pad(batch.response_mask.float(), (0, pad)))
    return torch.cat(logprobs), torch.cat(masks)


def distinct_token_share(response_ids) -> float:
    """Mean over responses of (distinct tokens / tokens): 1.0 for no repeats, low for "great great great"."""
    shares = [len(set(map(int, r))) / len(r) for r in response_ids if len(r)]
    return sum(shares) / max(1, len(shares))


_WORD = re.compile(r"[a-z]+")


def word_list(text: str) -> list[str]:
    """The words of a text as the unseen-word rate counts them: lowercase alphabetic runs ("Don't" -> don, t)."""
    return _WORD.findall(text.lower())


def continuation_words(prompt: str, continuation: str) -> list[str]:
    """The whole words a continuation wrote: the words of prompt + continuation after the prompt's, without the
    last one. A prompt cut mid-word ("I watched this mov") shares its last word with the continuation ("ie and"),
    and a continuation cut at its token limit ends mid-word: neither half-word is the writer's own."""
    return word_list(prompt + continuation)[len(word_list(prompt)):-1]


def unseen_word_rate(word_lists, vocabulary) -> float:
    """Share of the words (lists, e.g. from `continuation_words`) that never occur in `vocabulary` (e.g. every word
    of IMDB's train reviews). Real review text scores about 1 %; a model that glues sub-word pieces into non-words
    scores far more."""
    words = [w for words in word_lists for w in words]
    return sum(w not in vocabulary for w in words) / max(1, len(words))


def distinct_word_share(word_lists) -> float:
    """Distinct words / words over all the lists pooled: low when a writer keeps to a few words."""
    words = [w for words in word_lists for w in words]
    return len(set(words)) / max(1, len(words))


@torch.no_grad()
def repetition_reading(responses, tokenizer, top: int = 4) -> dict:
    """How repetitive a set of responses is: the mean distinct-token share of a response (`distinct_token_share`)
    and the `top` commonest words over all of them (`word_list`), with their counts."""
    responses = list(responses)
    ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    words = Counter(w for text in responses for w in word_list(text))
    return {"distinct_token_share": distinct_token_share(ids), "top_words": words.most_common(top),
            "responses": len(responses)}


def side_by_side(runs: dict, n: int = 8) -> pd.DataFrame:
    """The first `n` held-out samples of several runs in one table: the prompt, then each run's response and reward.
    `runs` maps a run's name to its samples (columns prompt, response, reward: `Evaluation.samples`, or a shipped
    run's). Raises ValueError unless every run answered the same prompts in the same order, so that the rows compare
    like with like."""
    frames = {name: pd.DataFrame(samples).head(n).reset_index(drop=True) for name, samples in runs.items()}
    prompts = next(iter(frames.values()))["prompt"]
    for name, frame in frames.items():
        if len(frame) != len(prompts) or not frame["prompt"].equals(prompts):
            raise ValueError(f"{name!r} answered other prompts than {next(iter(frames))!r}: side by side needs the "
                             f"same held-out prompts, in the same order (the same profile and held-out set).")
    table = pd.DataFrame({"prompt": prompts})
    for name, frame in frames.items():
        table[name] = frame["response"]
        table[f"reward ({name})"] = frame["reward"].round(2)
    return table


def evaluate(policy, reference, tokenizer, reward, prompts, sampling: Sampling = Sampling(),
             seed: int = EVAL_SEED) -> Evaluation:
    """Sample once per held-out prompt with a fixed seed, score, and measure KL and reference perplexity.
    `sampling`: the run's lengths and temperature (`profile.eval_sampling` in every run)."""
    was_training = policy.training
    policy.eval()
    samples = sample_with(policy, tokenizer, prompts.input_ids, sampling, seed)
    rewards = reward(samples.texts).cpu()
    logprobs, mask = sequence_logprobs(policy, samples, tokenizer.pad_token_id, sampling.temperature,
                                       sampling.batch_size)
    ref_logprobs, _ = sequence_logprobs(reference, samples, tokenizer.pad_token_id, sampling.temperature,
                                        sampling.batch_size)
    logprobs, ref_logprobs, mask = logprobs.cpu(), ref_logprobs.cpu(), mask.cpu()
    policy.train(was_training)
    kl = ((logprobs - ref_logprobs) * mask).sum(1).mean().item()
    ref_nll = -(ref_logprobs * mask).sum().item() / mask.sum().item()
    metrics = {"mean_reward": rewards.mean().item(), "positive_rate": (rewards > 0).float().mean().item(),
               "kl": kl, "ref_perplexity": math.exp(ref_nll), "n_prompts": len(samples)}
    table = pd.DataFrame({"prompt": samples.queries, "response": samples.responses, "reward": rewards.numpy()})
    return Evaluation(metrics, table)


@torch.no_grad()
def per_token_kl_tails(policy, reference, tokenizer, prompts, sampling: Sampling = Sampling(),
                       seed: int = EVAL_SEED) -> dict:
    """Why a logged per-token k3 KL can spike while the per-response KL stays moderate: on the policy's samples of
    the held-out prompts, each response token's log r = log π_ref − log π, its k1 = −log r and its
    k3 = r − 1 − log r (notebook 03). k3 is unbiased but heavy-tailed: where the reference finds a sampled token far
    likelier than the policy does (r ≫ 1), k3 ≈ r, so a few tokens can carry most of a batch mean.

    Returns tokens, k1_mean and k3_mean (per token), k3_median, k3_max, k3_top1pct_share (the share of the k3 sum
    carried by the 1 % largest tokens) and kl_per_response (k1 summed over each response, averaged)."""
    samples = sample_with(policy, tokenizer, prompts.input_ids, sampling, seed)
    logprobs, mask = sequence_logprobs(policy, samples, tokenizer.pad_token_id, sampling.temperature,
                                       sampling.batch_size)
    ref_logprobs, _ = sequence_logprobs(reference, samples, tokenizer.pad_token_id, sampling.temperature,
                                        sampling.batch_size)
    mask = mask.bool().cpu()
    log_r = (ref_logprobs - logprobs).cpu()
    tokens_log_r = log_r[mask].double()
    k1, k3 = -tokens_log_r, tokens_log_r.exp() - 1 - tokens_log_r
    top = k3.sort(descending=True).values[: max(1, len(k3) // 100)]
    return {"tokens": int(mask.sum()), "k1_mean": k1.mean().item(), "k3_mean": k3.mean().item(),
            "k3_median": k3.median().item(), "k3_max": k3.max().item(),
            "k3_top1pct_share": (top.sum() / k3.sum()).item(),
            "kl_per_response": (-(log_r * mask).sum(1)).mean().item()}
