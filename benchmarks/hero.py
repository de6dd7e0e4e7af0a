"""Draw the README's hero figure from a finished training run: the reward curve and before/after samples.

    python -m rlhf_helpers.train --algo ppo --profile smoke --out runs/hero
    python benchmarks/hero.py runs/hero benchmarks/hero.png

Everything in the figure is read from the run's own files (metrics.jsonl, summary.json, samples.csv).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path


def draw(run: Path, out: Path, n_samples: int = 4) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text())
    samples = pd.read_csv(run / "samples.csv")
    episodes = np.array([m["episodes"] for m in metrics])
    reward = np.array([m["reward_mean"] for m in metrics])
    kernel = np.ones(5) / 5
    smooth = np.convolve(np.concatenate([np.full(4, reward[0]), reward]), kernel, mode="valid")

    fig = plt.figure(figsize=(13, 4.2))
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 1.6])
    ax = fig.add_subplot(grid[0])
    ax.plot(episodes, reward, alpha=0.35, label="batch mean")
    ax.plot(episodes, smooth, lw=2.5, label="smoothed")
    before, after = summary["before"], summary["after"]
    ax.axhline(before["mean_reward"], color="k", ls=":", lw=1,
               label=f"held-out before: {before['positive_rate']:.0%} positive")
    ax.axhline(after["mean_reward"], color="k", ls="--", lw=1,
               label=f"held-out after: {after['positive_rate']:.0%} positive")
    ax.set(xlabel="episodes (responses sampled)", ylabel="reward (POSITIVE logit)",
           title=f"Hand-built PPO, {summary['profile']} profile, seed {summary['seed']}")
    ax.legend(fontsize=8, loc="lower right")

    text_ax = fig.add_subplot(grid[1])
    text_ax.axis("off")
    # The held-out prompts whose reward rose the most are the clearest picture of what training changed.
    picked = samples.assign(gain=samples.reward_after - samples.reward_before).nlargest(n_samples, "gain")
    y = 0.95
    for row in picked.itertuples():
        prompt = str(row.prompt)
        for label, response, score, colour in [("before", row.response_before, row.reward_before, "tab:grey"),
                                               ("after", row.response_after, row.reward_after, "tab:green")]:
            line = textwrap.shorten(f"{prompt}▸{response}".replace("\n", " "), 95)
            text_ax.text(0, y, f"{label:>6} {score:+.2f}  {line}", family="monospace", fontsize=9, color=colour,
                         va="top", transform=text_ax.transAxes)
            y -= 0.11
        y -= 0.07
    text_ax.set_title("Same held-out prompt, same sampling seed: before → after (reward, prompt▸response)",
                      fontsize=10, loc="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return {"before": before, "after": after, "episodes": int(episodes[-1]), "samples": len(picked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished run folder of python -m rlhf_helpers.train")
    parser.add_argument("out", type=Path, help="where to write the PNG")
    args = parser.parse_args()
    if not (args.run / "summary.json").is_file():
        parser.error(f"{args.run} holds no finished run (no summary.json); train one first (see the docstring).")
    print(json.dumps(draw(args.run, args.out)))


if __name__ == "__main__":
    main()
