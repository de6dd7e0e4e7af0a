"""Training curves, drawn the same way in the notebooks and in the headless runner's `curves.png`."""

from __future__ import annotations

import numpy as np


def _smooth(x, window: int = 5):
    x = np.asarray(x, dtype=float)
    if len(x) < window:
        return x
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, x[0]), x])
    return np.convolve(padded, kernel, mode="valid")


def plot_training_curves(history: list[dict], title: str = "", before: dict | None = None,
                         after: dict | None = None):
    """2x2 figure: reward (mean with a ±std band), KL and β, clipfrac/approxkl, entropy and response length."""
    import matplotlib.pyplot as plt

    episodes = np.array([h["episodes"] for h in history])
    fig, ax = plt.subplots(2, 2, figsize=(11, 6.5))
    mean = np.array([h["reward_mean"] for h in history])
    std = np.array([h["reward_std"] for h in history])
    ax[0, 0].fill_between(episodes, mean - std, mean + std, alpha=0.2, label="±1 std of the batch")
    ax[0, 0].plot(episodes, mean, alpha=0.4, label="batch mean")
    ax[0, 0].plot(episodes, _smooth(mean), lw=2, label="smoothed")
    for name, ev, style in [("before", before, ":"), ("after", after, "--")]:
        if ev:
            ax[0, 0].axhline(ev["mean_reward"], color="k", ls=style, lw=1, label=f"held-out {name}")
    ax[0, 0].set(title="Reward (POSITIVE logit)", xlabel="episodes")
    ax[0, 0].legend(fontsize=7)

    if "kl" in history[0]:
        ax[0, 1].plot(episodes, [h["kl"] for h in history], label="KL(π‖π_ref) per sequence (k1)")
    else:  # TRL logs the mean per-token k3 instead
        ax[0, 1].plot(episodes, [h["kl_per_token"] for h in history], label="KL per token (TRL's k3 mean)")
    ax[0, 1].set(title="KL to the reference", xlabel="episodes")
    if "kl_coef" in history[0]:
        twin = ax[0, 1].twinx()
        twin.plot(episodes, [h["kl_coef"] for h in history], color="tab:red", label="β (kl_coef)")
        twin.set_ylabel("β", color="tab:red")
    ax[0, 1].legend(fontsize=7, loc="upper left")

    for key in ("clipfrac", "approxkl"):
        if key in history[0]:
            ax[1, 0].plot(episodes, [h[key] for h in history], label=key)
    ax[1, 0].set(title="PPO update statistics", xlabel="episodes")
    ax[1, 0].legend(fontsize=7)

    if "entropy" in history[0]:
        ax[1, 1].plot(episodes, [h["entropy"] for h in history], label="entropy (nats/token)")
    ax[1, 1].plot(episodes, [h["response_length"] for h in history], label="response length (tokens)")
    ax[1, 1].set(title="Entropy and length", xlabel="episodes")
    ax[1, 1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_comparison(evals: dict[str, list[dict]], title: str = ""):
    """Side by side: held-out reward vs episodes and vs training seconds, and the reward-KL frontier.

    `evals` maps an algorithm's name to its held-out evaluations (eval.jsonl rows: episodes, train_seconds,
    mean_reward, positive_rate, kl, ...), all on the same prompts and sampling seed.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, rows in evals.items():
        episodes = [r["episodes"] for r in rows]
        seconds = [r["train_seconds"] for r in rows]
        reward = [r["mean_reward"] for r in rows]
        kl = [r["kl"] for r in rows]
        ax[0].plot(episodes, reward, marker="o", label=name)
        ax[1].plot(seconds, reward, marker="o", label=name)
        ax[2].plot(kl, reward, marker="o", label=name)
        ax[2].annotate(f"{rows[-1]['positive_rate']:.0%} positive", (kl[-1], reward[-1]), fontsize=8,
                       textcoords="offset points", xytext=(4, -10))
    ax[0].set(xlabel="episodes (completions sampled)", ylabel="held-out mean reward", title="Reward vs episodes")
    ax[1].set(xlabel="training seconds (evaluation excluded)", title="Reward vs wall-clock")
    ax[2].set(xlabel="KL to the reference (nats per response)", title="The reward–KL frontier (up-left is better)")
    ax[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
