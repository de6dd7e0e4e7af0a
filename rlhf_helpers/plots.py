"""Training curves, drawn the same way in the notebooks and in the headless runner's `curves.png`."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .faults import atomic_write


def _smooth(x, window: int = 5):
    x = np.asarray(x, dtype=float)
    if len(x) < window:
        return x
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, x[0]), x])
    return np.convolve(padded, kernel, mode="valid")


def plot_training_curves(history: list[dict], title: str = "", before: dict | None = None,
                         after: dict | None = None, kl_target: float | None = None):
    """Reward (mean with a ±std band); KL with its target; β on its own axis; clipfrac/approxkl; entropy and response
    length; the value head's explained variance. A run that logs no β and has no value head (TRL's GRPO and RLOO)
    gets the four panels that apply, its KL labelled per token as TRL logs it."""
    episodes = np.array([h["episodes"] for h in history])
    has_beta, has_value = "kl_coef" in history[0], "explained_variance" in history[0]
    if has_beta or has_value:
        fig, grid = plt.subplots(2, 3, figsize=(14, 6.5))
        ax_reward, ax_kl, ax_beta, ax_clip, ax_entropy, ax_value = grid.flat
    else:
        fig, grid = plt.subplots(2, 2, figsize=(10, 6.5))
        (ax_reward, ax_kl, ax_clip, ax_entropy), ax_beta, ax_value = grid.flat, None, None
    mean = np.array([h["reward_mean"] for h in history])
    std = np.array([h["reward_std"] for h in history])
    ax_reward.fill_between(episodes, mean - std, mean + std, alpha=0.2, label="±1 std of the batch")
    ax_reward.plot(episodes, mean, alpha=0.4, label="batch mean")
    ax_reward.plot(episodes, _smooth(mean), lw=2, label="smoothed")
    for name, ev, style in [("before", before, ":"), ("after", after, "--")]:
        if ev:
            ax_reward.axhline(ev["mean_reward"], color="k", ls=style, lw=1, label=f"held-out {name}")
    ax_reward.set(title="Reward (POSITIVE logit)", xlabel="episodes")
    ax_reward.legend(fontsize=7)

    if "kl" in history[0]:
        ax_kl.plot(episodes, [h["kl"] for h in history], label="KL(π‖π_ref) per response (k1)")
        if kl_target:
            ax_kl.axhline(kl_target, color="tab:red", ls="--", lw=1, label=f"target {kl_target:g}")
        ax_kl.set(ylabel="nats per response")
    else:  # TRL logs the ratio-weighted mean per-token k3 instead (no target: GRPO's β is fixed)
        ax_kl.plot(episodes, [h["kl_per_token"] for h in history], label="KL per token (TRL's k3 × π/π_old mean)")
        ax_kl.set(ylabel="nats per token")
    ax_kl.set(title="KL to the reference", xlabel="episodes")
    ax_kl.legend(fontsize=7)

    if ax_beta is not None and has_beta:
        beta = np.array([h["kl_coef"] for h in history])
        ax_beta.plot(episodes, beta, color="tab:red")
        spread = max(beta.max() - beta.min(), 0.05 * abs(beta.mean()), 1e-12)
        ax_beta.set_ylim(beta.min() - spread, beta.max() + spread)  # a range that shows the change, no offset
        ax_beta.ticklabel_format(axis="y", useOffset=False)
        change = beta[-1] / beta[0] - 1 if beta[0] else 0.0
        ax_beta.set(title=f"β (kl_coef): {beta[0]:.4g} → {beta[-1]:.4g} ({change:+.1%})", xlabel="episodes")
    elif ax_beta is not None:
        ax_beta.text(0.5, 0.5, "fixed β (not logged)", ha="center", va="center", transform=ax_beta.transAxes)
        ax_beta.set(title="β (kl_coef)", xticks=[], yticks=[])

    for key in ("clipfrac", "approxkl"):
        if key in history[0]:
            ax_clip.plot(episodes, [h[key] for h in history], label=key)
    ax_clip.set(title="Clipped-update statistics", xlabel="episodes")
    ax_clip.legend(fontsize=7)

    if "entropy" in history[0]:
        ax_entropy.plot(episodes, [h["entropy"] for h in history], label="entropy (nats/token)")
    ax_entropy.set(title="Entropy (left axis) and response length (right axis)", xlabel="episodes",
                   ylabel="entropy (nats/token)")
    ax_length = ax_entropy.twinx()  # two units: each on its own axis, so the entropy's fall is visible
    ax_length.plot(episodes, [h["response_length"] for h in history], color="tab:orange",
                   label="response length (tokens)")
    ax_length.set_ylabel("response length (tokens)")
    handles = ax_entropy.get_legend_handles_labels()
    more = ax_length.get_legend_handles_labels()
    ax_entropy.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7)

    if ax_value is not None and has_value:
        ev = np.array([h["explained_variance"] for h in history])
        ax_value.plot(episodes, ev, alpha=0.4)
        ax_value.plot(episodes, _smooth(ev), lw=2)
        ax_value.axhline(0, color="k", lw=0.8)
        ax_value.set(title="Value head: explained variance", xlabel="episodes",
                     ylim=(max(-1.0, float(ev.min()) - 0.05), 1.0))
    elif ax_value is not None:
        ax_value.text(0.5, 0.5, "no value head", ha="center", va="center", transform=ax_value.transAxes)
        ax_value.set(title="Value head: explained variance", xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_comparison(evals: dict[str, list[dict]], title: str = ""):
    """Side by side: held-out reward vs episodes and vs training seconds, and reward against KL along each run (a
    trajectory; notebook 08 draws the frontier, one point per finished run).

    `evals` maps an algorithm's name to its held-out evaluations (eval.jsonl rows: episodes, train_seconds,
    mean_reward, positive_rate, kl, ...), all on the same prompts and sampling seed.
    """
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
                       textcoords="offset points", xytext=(0, 8), ha="center")  # above its run's last point
    ax[0].set(xlabel="episodes (completions sampled)", ylabel="held-out mean reward", title="Reward vs episodes")
    ax[1].set(xlabel="training seconds (evaluation excluded)", title="Reward vs wall-clock")
    ax[2].set(xlabel="KL to the reference (nats per response)", title="Reward against KL, along each run")
    ax[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_dpo_curves(history: list[dict], evals: list[dict], title: str = ""):
    """1x3 figure of a DPO run: the loss (log 2 at the start: the policy is its reference); the implicit rewards
    β·log π/π_ref of chosen and rejected; held-out reward and KL from the evaluations."""
    episodes = [h["episodes"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    ax[0].plot(episodes, [h["loss"] for h in history], marker="o", label="DPO loss")
    ax[0].axhline(np.log(2), color="grey", ls=":", label="log 2 (policy = reference)")
    ax0b = ax[0].twinx()
    ax0b.plot(episodes, [h["reward_accuracy"] for h in history], color="tab:green", marker=".",
              label="pairs ranked right")
    ax0b.set(ylim=(0, 1), ylabel="share of training pairs")
    ax[0].set(title="Loss and preference accuracy", xlabel="episodes")
    ax[0].legend(fontsize=7, loc="lower left")
    ax0b.legend(fontsize=7, loc="lower right")
    ax[1].plot(episodes, [h["reward_chosen"] for h in history], label="chosen: β·log π/π_ref")
    ax[1].plot(episodes, [h["reward_rejected"] for h in history], label="rejected")
    ax[1].plot(episodes, [h["reward_margin"] for h in history], ls="--", label="margin")
    ax[1].axhline(0, color="k", lw=0.6)
    ax[1].set(title="Implicit rewards (training batches)", xlabel="episodes")
    ax[1].legend(fontsize=7)
    ax[2].plot([e["kl"] for e in evals], [e["mean_reward"] for e in evals], marker="o")
    for i, e in enumerate(evals):  # in time order: the last evaluation need not be the rightmost
        label = f"{e['positive_rate']:.0%}" + (" (end)" if i == len(evals) - 1 and len(evals) > 1 else "")
        ax[2].annotate(label, (e["kl"], e["mean_reward"]), fontsize=7, xytext=(3, -9),
                       textcoords="offset points")
    ax[2].set(title="Held-out reward vs KL (labels: positive rate)", xlabel="KL to the reference (nats/response)",
              ylabel="mean reward")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    """Write `fig` as a PNG under a temporary name, rename it into place, and close it."""
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
