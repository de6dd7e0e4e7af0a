"""The shipped world's training curves: held-out loss and unseen-word rate against tokens seen, read from the
`part.json` of each LM (base, policy, reader), with real review text's rate as the reference.

    python benchmarks/world_curve.py [--world rlhf_helpers/smoke_world] [--out benchmarks/world_curve.png]

Prints a markdown table (the one in benchmarks/README.md) and draws the figure. Reads JSON only: seconds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlhf_helpers.world import SHIPPED_DIR  # noqa: E402

LMS = ("base", "policy", "reader")


def curves(world: Path) -> dict[str, dict]:
    return {part: json.loads((world / part / "part.json").read_text()) for part in LMS
            if (world / part / "part.json").is_file()}


def table(records: dict[str, dict]) -> str:
    real = records["policy"]["real_text"]
    lines = ["| LM | tokens seen | held-out loss (nats/token) | unseen-word rate | × real text | distinct-word share | "
             "a sample |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for part, record in records.items():
        for point in record["curve"]:
            sample = point["sample"].replace("|", "/").replace("\n", " ")[:70]
            rate = point["unseen_word_rate"]
            lines.append(f"| {part} | {point['tokens'] / 1e6:.1f}M | {point['heldout_loss']:.2f} | {rate:.1%} | "
                         f"{rate / real['unseen_word_rate']:.1f} | {point['distinct_word_share']:.2f} | \"{sample}\" |")
    lines.append(f"| real review text | | | {real['unseen_word_rate']:.1%} | 1.0 | "
                 f"{real['distinct_word_share']:.2f} | |")
    return "\n".join(lines)


def draw(records: dict[str, dict], out: Path) -> None:
    fig, (loss_ax, rate_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset = 0.0
    for part, record in records.items():
        # The policy continues the base: its tokens count on from where the base stopped.
        start = offset if part == "policy" else 0.0
        xs = [start + p["tokens"] / 1e6 for p in record["curve"]]
        loss_ax.plot(xs, [p["heldout_loss"] for p in record["curve"]], marker="o", label=part)
        rate_ax.plot(xs, [100 * p["unseen_word_rate"] for p in record["curve"]], marker="o", label=part)
        if part == "base":
            offset = xs[-1]
    real = records["policy"]["real_text"]["unseen_word_rate"]
    rate_ax.axhline(100 * real, color="k", lw=1, ls=":", label="real review text")
    rate_ax.axhline(300 * real, color="k", lw=1, ls="--", label="goal: 3× real text")
    loss_ax.set(xlabel="tokens seen (millions)", ylabel="held-out loss on test reviews (nats/token)")
    rate_ax.set(xlabel="tokens seen (millions)", ylabel="unseen words in 16-token samples (%)")
    rate_ax.set_ylim(0, None)
    for ax in (loss_ax, rate_ax):
        ax.grid(alpha=0.3)
    rate_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(SHIPPED_DIR))
    parser.add_argument("--out", default=str(Path(__file__).with_name("world_curve.png")))
    args = parser.parse_args()
    records = curves(Path(args.world))
    print(table(records))
    draw(records, Path(args.out))


if __name__ == "__main__":
    main()
