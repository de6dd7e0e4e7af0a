"""Reward-model over-optimization: the measuring tools (best-of-n, Gao et al.'s fits, PPO against a proxy).

Gao, Schulman & Hilton (2022) found that as a policy is optimized against a learned reward model, the proxy reward
keeps rising while the true ("gold") reward rises, peaks and falls, and that with d = √KL(π‖π_init):

    best-of-n:  R_gold(d) = d (α − β d)             KL_bon = log n − (n − 1) / n
    RL:         R_gold(d) = d (α − β log d)

(R measured from its value at d = 0.) This module holds the tested pieces of that study so far: the analytic
best-of-n KL, best-of-n over many samples per prompt, and the least-squares fits. The study itself (PPO against the
proxy, notebook 06, `python -m rlhf_helpers.overoptimization`) needs the offline world's gold judge and is to come.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def bon_kl(n: int) -> float:
    """Analytic KL of best-of-n to the base policy: log n − (n − 1)/n (Stiennon et al. 2020, appendix G.3)."""
    return math.log(n) - (n - 1) / n


def fit_gao(d: np.ndarray, r: np.ndarray, form: str) -> dict:
    """Least-squares fit of Gao et al.'s forms to gold reward gains r (relative to d = 0) at d = √KL.

    form "bon": r = d(α − βd) = α·d − β·d²;  form "rl": r = d(α − β log d) = α·d − β·d·log d.  Returns α, β, r²."""
    d, r = np.asarray(d, float), np.asarray(r, float)
    keep = d > 0
    d, r = d[keep], r[keep]
    if len(d) < 3:
        return {"alpha": float("nan"), "beta": float("nan"), "r2": float("nan"), "points": int(len(d))}
    second = d**2 if form == "bon" else d * np.log(d)
    design = np.stack([d, -second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, r, rcond=None)
    pred = design @ np.array([alpha, beta])
    ss_res, ss_tot = float(((r - pred) ** 2).sum()), float(((r - r.mean()) ** 2).sum())
    return {"alpha": float(alpha), "beta": float(beta), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "points": int(len(d))}


@torch.no_grad()
def best_of_n(policy, tokenizer, proxy, gold, query_ids, max_n: int = 64, gen_min: int = 4, gen_max: int = 16,
              temperature: float = 1.0, seed: int = 0) -> tuple[list[dict], dict]:
    """Sample `max_n` completions per prompt; for n = 1, 2, 4, … pick the proxy's favourite among each group of n.

    Every sample is used: the max_n samples of a prompt form max_n / n disjoint groups of n. Returns one row per n
    (n, kl, proxy, gold) and the raw scores."""
    from .sampling import sample_responses

    repeated = [q for q in query_ids for _ in range(max_n)]
    samples = sample_responses(policy, tokenizer, repeated, gen_min, gen_max, temperature=temperature,
                               batch_size=512, seed=seed)
    proxy_scores = proxy(samples.texts).float().cpu().view(len(query_ids), max_n)
    gold_scores = gold(samples.texts).float().cpu().view(len(query_ids), max_n)
    rows, n = [], 1
    while n <= max_n:
        groups = max_n // n
        p = proxy_scores[:, : groups * n].reshape(len(query_ids), groups, n)
        g = gold_scores[:, : groups * n].reshape(len(query_ids), groups, n)
        pick = p.argmax(-1, keepdim=True)
        rows.append({"n": n, "kl": bon_kl(n), "proxy": p.gather(-1, pick).mean().item(),
                     "gold": g.gather(-1, pick).mean().item()})
        n *= 2
    return rows, {"proxy": proxy_scores, "gold": gold_scores, "texts": samples.texts}
