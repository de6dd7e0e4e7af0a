"""PPO for language models, one function per formula.

Conventions: B = batch (episodes), T = response length (right-padded), V = vocabulary.
`mask` is 1 on response tokens and 0 on padding; a response occupies positions 0..n-1 of its row.
References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Ziegler et al. 2019 (KL-penalised
reward, adaptive KL), Huang et al. 2023 ("The N Implementation Details of RLHF with PPO"),
Schulman 2020 ("Approximating KL divergence", the k1/k2/k3 estimators).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "logprobs_from_logits", "entropy_from_logits", "masked_mean", "masked_var", "masked_whiten",
    "kl_estimate", "per_token_rewards", "compute_gae", "clipped_policy_loss", "clipped_value_loss",
    "AdaptiveKLController", "FixedKLController",
]


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(token) = log_softmax(logits / temperature)[token].

    (B, T, V), (B, T) -> (B, T). Divide by the *sampling* temperature: the tokens were drawn from
    softmax(logits / T), so that is the distribution whose log-probs PPO must use (N implementation
    details, #12). Computed in float32 so bf16 logits do not round the ratio.
    """
    logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - Σ softmax(z)·z = -Σ p log p.   (B, T, V) -> (B, T)"""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ x·m / Σ m: the mean over entries where mask is 1."""
    return (x * mask).sum() / mask.sum()


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ (x - mean)²·m / Σ m: the variance over unmasked entries, divisor N (not N - 1)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) with masked statistics (the advantages' whitening, details #7)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimates of KL(π‖π_ref) from tokens sampled from π, with log r = log π_ref - log π:

    k1 = -log r               unbiased, can be negative on single tokens;
    k2 = ½ (log r)²           biased, low variance, never negative;
    k3 = (r - 1) - log r      unbiased, never negative (r - 1 ≥ log r).
    """
    log_r = ref_logprobs - logprobs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"Unknown KL estimator {kind!r}; choose 'k1', 'k2' or 'k3'.")


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    lengths = mask.sum(-1).long()  # (B,)
    if (lengths == 0).any():
        raise ValueError("Every response needs at least one token (a row of the mask is all zeros).")
    return lengths - 1


def per_token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = -β·(log π(a_t) - log π_ref(a_t)) on every response token, plus the score on the last one.

    (B,), (B, T), (B, T), (B, T) -> (B, T). The classifier scores the whole text, so its reward arrives
    at the final token; the KL penalty is paid token by token (Ziegler et al. 2019). Padding gets 0.
    """
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask  # (B, T)
    last = _last_index(mask)  # (B,)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) on right-padded responses.

    δ_t = r_t + γ·V_{t+1} - V_t,   A_t = δ_t + γλ·A_{t+1},   with V and A after the last token = 0.
    Returns (advantages, returns = advantages + values), both (B, T) and 0 on padding.
    """
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros(B, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # Multiplying by the mask resets the recursion on padding, so nothing leaks into a row's last token.
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * mask
    return advantages, returns


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_eps: float = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate, as a loss to minimise (Schulman et al. 2017, eq. 7):

    ratio = exp(log π - log π_old)
    L = masked_mean( max(-A·ratio, -A·clip(ratio, 1-ε, 1+ε)) )  over all response tokens.
    Stats: `clipfrac` (share of tokens where the clipped branch is taken) and `approxkl` (k3 of the
    ratio, an estimate of KL(π_old‖π)), both floats.
    """
    log_ratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approxkl": masked_mean((ratio - 1) - log_ratio, mask).item(),
        }
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip_eps: float = 0.2) -> tuple[torch.Tensor, dict]:
    """½ · masked_mean( max((V - R)², (V_old + clip(V - V_old, -ε, ε) - R)²) ).

    Keeps the value head from jumping far from its rollout-time predictions in one update.
    Stats: `vf_clipfrac` as a float.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((loss_clipped > loss_unclipped).float(), mask).item()}
    return loss, stats


class AdaptiveKLController:
    """Adapt β toward a target KL (Ziegler et al. 2019, eq. 2):

    error = clip(KL / target - 1, -0.2, 0.2);   β ← β · (1 + error · n_steps / horizon).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive.")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = state["value"], state["target"], state["horizon"]


class FixedKLController:
    """A constant β with the adaptive controller's interface."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]
