"""Reward-model over-optimization: the measuring tools (best-of-n, Gao et al.'s fits, PPO against a proxy).

Gao, Schulman & Hilton (2022) found that as a policy is optimized against a learned reward model, the proxy reward
keeps rising while the true ("gold") reward rises, peaks and falls, and that with d = √KL(π‖π_init):

    best-of-n:  R_gold(d) = d (α − β d)             KL_bon = log n − (n − 1) / n
    RL:         R_gold(d) = d (α − β log d)

(R measured from its value at d = 0.) This module holds the pieces of that study: best-of-n over many samples per
prompt, the hand-built PPO loop with a reward model as its reward and gold/proxy/KL recorded on held-out prompts,
the least-squares fits and the plot. The study itself (notebook 06 and `python -m rlhf_helpers.overoptimization`)
needs the gold judge of the offline world and is still to come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class OveroptConfig:
    """Settings of the over-optimization study (defaults: the smoke profile on 2 CPU cores)."""

    seed: int = 0
    """Seeds sampling, labels, reward-model training and PPO."""
    n_pref_prompts: int = 1024
    """Training prompts; each gives one labelled pair (two completions of the supervised policy)."""
    n_heldout_pairs: int = 256
    """Held-out pairs (from held-out test prompts) for the reward model's accuracy."""
    label_noise: float = 0.5
    """τ of the simulated rater: P(a ≻ b) = σ((g_a − g_b)/τ). Larger τ, noisier labels."""
    rm_epochs: int = 2
    """Passes of RewardTrainer over the pairs."""
    rm_learning_rate: float = 1e-3
    """Reward-model learning rate (a 1M-parameter model tolerates far more than GPT-2's 1e-5)."""
    bon_prompts: int = 64
    """Held-out prompts for best-of-n."""
    bon_max_n: int = 64
    """Samples per prompt; n runs over powers of two up to this."""
    rl_betas: tuple[float, ...] = (0.0, 0.05)
    """Fixed KL coefficients of the PPO runs against the proxy (0: nothing holds the policy back)."""
    rl_steps: int = 48
    """PPO steps per run."""
    rl_eval_every: int = 4
    """Held-out evaluation (proxy, gold, KL) every this many steps."""
    rl_learning_rate: float = 5e-4
    """PPO learning rate (the smoke recipe's)."""
    n_eval_prompts: int = 128
    """Held-out prompts of each RL evaluation."""


SMOKE = OveroptConfig()
HUB = OveroptConfig(n_pref_prompts=4096, n_heldout_pairs=512, label_noise=0.5, rm_epochs=1, rm_learning_rate=1e-5,
                    bon_prompts=128, rl_betas=(0.0, 0.1), rl_steps=100, rl_eval_every=10, rl_learning_rate=1.41e-5,
                    n_eval_prompts=256)
"""gpu/cpu: closer to the DPO paper's IMDB setup (GPT-2 policy, siebert/sentiment-roberta-large-english as the judge).
Runtime at this size is an estimate, not yet measured."""


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


def fit_curve(d: np.ndarray, fit: dict, form: str) -> np.ndarray:
    d = np.asarray(d, float)
    second = d**2 if form == "bon" else np.where(d > 0, d * np.log(np.maximum(d, 1e-12)), 0.0)
    return fit["alpha"] * d - fit["beta"] * second


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


@dataclass
class RLRun:
    """Held-out evaluations of one PPO run against the proxy."""

    beta: float
    rows: list = field(default_factory=list)
    samples: dict = field(default_factory=dict)
    """step -> DataFrame of held-out samples (prompt, response, proxy, gold)."""


def rl_against_proxy(profile, world_policy: str, tokenizer, proxy, gold, train_prompts, heldout, beta: float,
                     config: OveroptConfig, progress: bool = False) -> RLRun:
    """The course's hand-built PPO with the reward model as reward and a fixed β; gold/proxy/KL every few steps."""
    from transformers import AutoModelForCausalLM

    from .evaluation import evaluate
    from .ppo_loop import PPOConfig, make_state, train

    device = proxy.device
    load = lambda: AutoModelForCausalLM.from_pretrained(world_policy, use_safetensors=True).to(device).eval()  # noqa: E731
    policy, reference = load(), load()
    ppo_config = PPOConfig.from_profile(profile, seed=config.seed, steps=config.rl_steps, init_kl_coef=beta,
                                        kl_target=None, learning_rate=config.rl_learning_rate)
    state = make_state(ppo_config, policy, reference, tokenizer, proxy, train_prompts)
    run = RLRun(beta)

    def record(step: int) -> None:
        ev = evaluate(policy, reference, tokenizer, proxy, heldout, ppo_config.gen_min_tokens,
                      ppo_config.gen_max_tokens, ppo_config.temperature, profile.eval_batch_size)
        gold_scores = gold((ev.samples["prompt"] + ev.samples["response"]).tolist()).float().cpu()
        table = ev.samples.rename(columns={"reward": "proxy"}).assign(gold=gold_scores.numpy())
        run.rows.append({"run": f"ppo β={beta:g}", "beta": beta, "step": step, "kl": ev.metrics["kl"],
                         "proxy": ev.metrics["mean_reward"], "gold": gold_scores.mean().item()})
        run.samples[step] = table

    record(0)

    def on_step(rec: dict) -> None:
        if state.step % config.rl_eval_every == 0:
            record(state.step)

    train(state, on_step=on_step, progress=progress)
    return run


def gold_peak_and_end(rows: list[dict]) -> dict:
    """Where gold peaked, and whether it fell afterwards while the proxy kept above its value at the peak."""
    peak = max(rows, key=lambda r: r["gold"])
    end = rows[-1]
    return {"peak_step": peak["step"], "peak_gold": peak["gold"], "peak_proxy": peak["proxy"],
            "end_step": end["step"], "end_gold": end["gold"], "end_proxy": end["proxy"],
            "overoptimized": end["gold"] < peak["gold"] and end["proxy"] > peak["proxy"]}


def plot_overoptimization(bon: list[dict], rl_rows: list[dict], fits: dict):
    """Gold and proxy against √KL: best-of-n (left) and PPO runs (right), with Gao et al.'s fitted gold curves."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    d = np.sqrt([r["kl"] for r in bon])
    g0 = bon[0]["gold"]
    axes[0].plot(d, [r["proxy"] for r in bon], "o-", color="tab:orange", label="proxy (reward model)")
    axes[0].plot(d, [r["gold"] for r in bon], "o-", color="tab:blue", label="gold judge")
    grid = np.linspace(0, d.max(), 100)
    axes[0].plot(grid, g0 + fit_curve(grid, fits["bon"], "bon"), "--", color="tab:blue", alpha=0.6,
                 label=f"fit d(α − βd): α={fits['bon']['alpha']:.2f}, β={fits['bon']['beta']:.2f}")
    for r in bon:
        axes[0].annotate(f"n={r['n']}", (math.sqrt(r["kl"]), r["proxy"]), fontsize=7, xytext=(2, 4),
                         textcoords="offset points")
    axes[0].set(title="Best-of-n against the proxy", xlabel="√KL (nats^½)", ylabel="reward (mean over prompts)")
    axes[0].legend(fontsize=7)
    for (run, color) in zip(sorted({r["run"] for r in rl_rows}), ("tab:red", "tab:green", "tab:purple")):
        rows = [r for r in rl_rows if r["run"] == run]
        dd = np.sqrt(np.maximum([r["kl"] for r in rows], 0))
        axes[1].plot(dd, [r["proxy"] for r in rows], "s--", color=color, alpha=0.6, label=f"{run}: proxy")
        axes[1].plot(dd, [r["gold"] for r in rows], "o-", color=color, label=f"{run}: gold")
    rl_fit = fits["rl"]
    if np.isfinite(rl_fit["alpha"]):
        all_d = np.sqrt(np.maximum([r["kl"] for r in rl_rows], 0))
        grid = np.linspace(1e-3, all_d.max(), 100)
        base = np.mean([r["gold"] for r in rl_rows if r["step"] == 0])
        axes[1].plot(grid, base + fit_curve(grid, rl_fit, "rl"), ":", color="k",
                     label=f"fit d(α − β log d): α={rl_fit['alpha']:.2f}, β={rl_fit['beta']:.2f}")
    axes[1].set(title="PPO against the proxy", xlabel="√KL (nats^½)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
