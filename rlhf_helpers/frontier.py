"""The reward–KL frontier of PPO, GRPO and DPO (the DPO paper's Figure 2, redrawn on the course's models).

One point per run: each algorithm at several strengths of its KL regularization (PPO: a fixed β on a summed k1
penalty in the reward; GRPO: a β on the per-token-mean k3 in the loss; DPO: the β inside its loss). The same
number is not the same pressure across methods, so the methods are compared on the frontier, not at one shared β.
Every point comes from the same `evaluate()` on the same held-out prompts and sampling seed, on the same episode
budget; the gold judge of notebook 06 also scores each run's held-out samples. `benchmarks/frontier.py` runs the
sweep; the smoke profile's measured points ship with the package (`measured_frontier`), for notebook 07.
"""

from __future__ import annotations

import json
from pathlib import Path

SWEEP = {"ppo": [0.02, 0.06, 0.2], "grpo": [0.02, 0.06, 0.2], "dpo": [0.05, 0.1, 0.3]}
"""The KL coefficient of each run, per algorithm (PPO's is fixed: no adaptive controller)."""


def run_point(algo: str, beta: float, profile_name: str, out: Path, seed: int = 0) -> dict:
    import pandas as pd

    from rlhf_helpers import get_profile
    from rlhf_helpers.models import load_gold
    from rlhf_helpers.train import run

    field = {"dpo": {"dpo_beta": beta}}.get(algo, {"init_kl_coef": beta, "kl_target": None})
    profile = get_profile(profile_name, **field)
    folder = out / f"{algo}-beta{beta:g}"
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else \
        run(algo, profile, folder, seed=seed, progress=False, resume=True)  # an unfinished point starts again
    samples = pd.read_csv(folder / "samples.csv", keep_default_na=False)
    judge = load_gold(profile)
    gold = judge((samples["prompt"] + samples["response_after"]).tolist()).float().mean().item()
    gold_before = judge((samples["prompt"] + samples["response_before"]).tolist()).float().mean().item()
    return {"algo": algo, "beta": beta, **{k: summary["after"][k] for k in ("mean_reward", "positive_rate", "kl",
                                                                          "ref_perplexity")},
            "gold": gold, "gold_before": gold_before, "reward_before": summary["before"]["mean_reward"],
            "train_seconds": summary["train_seconds"], "episodes": summary["episodes"]}


def plot_frontier(points: list[dict], title: str = ""):
    """Reward (left) and gold reward (right) against KL to the reference: one marker per run, one line per method."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for algo, marker in (("ppo", "o"), ("grpo", "s"), ("dpo", "^")):
        rows = sorted((p for p in points if p["algo"] == algo), key=lambda p: p["kl"])
        if not rows:
            continue
        for ax, key in zip(axes, ("mean_reward", "gold")):
            ax.plot([p["kl"] for p in rows], [p[key] for p in rows], marker=marker, label=algo.upper())
            for p in rows:
                ax.annotate(f"β={p['beta']:g}", (p["kl"], p[key]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    if points:
        axes[0].axhline(points[0]["reward_before"], color="grey", ls=":", label="before training")
        axes[1].axhline(points[0]["gold_before"], color="grey", ls=":", label="before training")
    axes[0].set(title="Reward the runs were trained for (the classifier)", ylabel="held-out mean reward")
    axes[1].set(title="Gold judge (never trained on)", ylabel="held-out mean gold reward")
    for ax in axes:
        ax.set_xlabel("KL to the reference (nats per response)")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def measured_frontier(profile_name: str) -> dict | None:
    """The sweep measured by `benchmarks/frontier.py` for this profile, shipped with the package; None if there is
    none (only `smoke` has been measured: the hub models cannot be reached from the machines the course is built on)."""
    return measured_result("frontier", profile_name)


def measured_result(kind: str, profile_name: str) -> dict | None:
    """A benchmark's measured result for a profile, shipped with the package (`rlhf_helpers/results/KIND_PROFILE.json`,
    written by `benchmarks/KIND.py`, with its machine and date inside); None if none was measured for the profile."""
    from importlib.resources import files

    path = files("rlhf_helpers").joinpath(f"results/{kind}_{profile_name}.json")
    return json.loads(path.read_text()) if path.is_file() else None
