"""Sampling responses from the policy: batched, left-padded prompts, plain sampling, honest lengths.

Plain sampling (`top_k=0`, `top_p=1`, no `min_new_tokens`) draws from the policy's full distribution,
which is what makes the sampled KL estimate meaningful (TRL issue #235: `min_length`, top-k and a
suppressed EOS make it go negative). Response lengths follow the classic recipe (TRL's original
gpt2-sentiment notebook): each response gets a length cap drawn uniformly from [gen_min, gen_max]; we
generate `gen_max` tokens and cut each row at its cap, which has the same distribution as generating that
row alone with `max_new_tokens=cap`, because later tokens never influence earlier ones. A row that emits
EOS earlier ends there (EOS included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ppo import logprobs_from_logits
from .profiles import Sampling


@dataclass
class Samples:
    """Prompts and sampled responses, as token ids (1-D tensors, no padding) and decoded text."""

    query_ids: list[torch.Tensor]
    response_ids: list[torch.Tensor]
    queries: list[str]
    responses: list[str]

    @property
    def texts(self) -> list[str]:
        """Prompt + response: what the reward model scores (as in the classic notebook)."""
        return [q + r for q, r in zip(self.queries, self.responses)]

    def __len__(self) -> int:
        return len(self.queries)


def left_pad(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D id tensors left-padded to one length. Returns (input_ids, attention_mask), (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    return ids, mask


def cut_response(tokens: torch.Tensor, cap: int, eos_id: int) -> torch.Tensor:
    """First `cap` generated tokens, ending after the first EOS if one comes earlier."""
    tokens = tokens[:cap]
    eos = (tokens == eos_id).nonzero()
    return tokens[: int(eos[0]) + 1] if len(eos) else tokens


@torch.no_grad()
def sample_responses(policy, tokenizer, query_ids: list[list[int]] | list[torch.Tensor], gen_min: int = 4,
                     gen_max: int = 16, temperature: float = 1.0, batch_size: int = 64,
                     seed: int | None = None) -> Samples:
    """Sample one response per prompt. With `seed`, the draw is reproducible and leaves the global
    random state untouched (so evaluating mid-training does not change the training run)."""
    if not 1 <= gen_min <= gen_max:
        raise ValueError(f"Need 1 <= gen_min <= gen_max, got {gen_min}, {gen_max}.")
    device = next(policy.parameters()).device
    queries = [torch.as_tensor(q, dtype=torch.long) for q in query_ids]
    if any(len(q) == 0 for q in queries):
        raise ValueError("Every prompt needs at least one token.")
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        caps = torch.randint(gen_min, gen_max + 1, (len(queries),)).tolist()
        responses = []
        for start in range(0, len(queries), batch_size):
            batch = queries[start:start + batch_size]
            ids, mask = left_pad(batch, pad_id)
            out = policy.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                                  top_k=0, top_p=1.0, temperature=temperature, max_new_tokens=gen_max,
                                  pad_token_id=pad_id, eos_token_id=eos_id)
            # Slice by the padded prompt length, never `[-gen_len:]`: with an early EOS that would
            # pull prompt tokens into the response (TRL issue #1755).
            generated = out[:, ids.shape[1]:].cpu()
            responses += [cut_response(row, cap, eos_id)
                          for row, cap in zip(generated, caps[start:start + batch_size])]
    return Samples(query_ids=queries, response_ids=responses,
                   queries=tokenizer.batch_decode(queries, skip_special_tokens=True),
                   responses=tokenizer.batch_decode(responses, skip_special_tokens=True))


def sample_with(policy, tokenizer, query_ids, sampling: Sampling, seed: int | None = None) -> Samples:
    """`sample_responses` with its lengths, temperature and batch size from one `Sampling`."""
    return sample_responses(policy, tokenizer, query_ids, sampling.min_tokens, sampling.max_tokens,
                            temperature=sampling.temperature, batch_size=sampling.batch_size, seed=seed)


@dataclass
class PackedBatch:
    """Prompts left-padded, responses right-padded, side by side: [pad pad q q q | r r r pad]."""

    input_ids: torch.Tensor  # (B, Lq + Lr)
    attention_mask: torch.Tensor  # (B, Lq + Lr)
    position_ids: torch.Tensor  # (B, Lq + Lr): 0 at each row's first real token, as in generate()
    response_ids: torch.Tensor  # (B, Lr)
    response_mask: torch.Tensor  # (B, Lr): 1 on response tokens, 0 on padding
    query_len: int  # Lq: the response starts at this column

    def to(self, device: torch.device | str) -> PackedBatch:
        """The one place a batch moves to the model's device (a no-op for tensors already there)."""
        return PackedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                           self.response_ids.to(device), self.response_mask.to(device), self.query_len)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: 0 at each row's first real token, as `generate()` numbers them.

    (B, L) -> (B, L). Padding columns get 0 (any valid index works: the attention mask hides them). Without
    this, a prompt left-padded by 5 would start at position 5, and the forward pass would disagree with the
    log-probs `generate()` sampled from (notebook 03, section 3).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pack(query_ids: list[torch.Tensor], response_ids: list[torch.Tensor], pad_id: int) -> PackedBatch:
    """Lay out a batch so one forward pass scores every response token (on the CPU: `.to(device)` moves it)."""
    query_ids = [torch.as_tensor(q).cpu() for q in query_ids]
    response_ids = [torch.as_tensor(r).cpu() for r in response_ids]
    q_ids, q_mask = left_pad(query_ids, pad_id)  # (B, Lq)
    width = max(len(r) for r in response_ids)
    r_ids = torch.full((len(response_ids), width), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(response_ids), width), dtype=torch.long)
    for i, r in enumerate(response_ids):
        r_ids[i, : len(r)] = r
        r_mask[i, : len(r)] = 1
    attention_mask = torch.cat([q_mask, r_mask], dim=1)
    position_ids = position_ids_from_mask(attention_mask)
    return PackedBatch(torch.cat([q_ids, r_ids], dim=1), attention_mask, position_ids, r_ids, r_mask,
                       q_ids.shape[1])


def response_logits(model, batch: PackedBatch, output_hidden_states: bool = False):
    """Logits that predict each response token: position t of the response is predicted at column
    Lq + t - 1. Returns (logits (B, Lr, V), last hidden states (B, Lr, H) or None)."""
    batch = batch.to(next(model.parameters()).device)
    width = batch.response_ids.shape[1]
    # logits_to_keep: run the vocabulary projection only on the Lr + 1 last columns. With GPT-2's 50,257-token
    # head that projection is a third of the model's compute per token, so skipping the prompt columns matters.
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                output_hidden_states=output_hidden_states, logits_to_keep=width + 1)
    logits = out.logits[:, :width]
    start = batch.query_len - 1
    hidden = out.hidden_states[-1][:, start:start + width] if output_hidden_states else None
    return logits, hidden


def response_logprobs(model, batch: PackedBatch, temperature: float = 1.0) -> torch.Tensor:
    """log π of each response token under `model`, (B, Lr) on its device: the one per-token log-prob path that the
    evaluation, DPO and the notebooks share (PPO's loop also keeps the hidden states for its value head). Padding
    positions hold log-probs of the pad token: mask them with `batch.response_mask`. Gradients flow outside
    `torch.no_grad()`."""
    logits, _ = response_logits(model, batch)
    return logprobs_from_logits(logits, batch.response_ids.to(logits.device), temperature)
