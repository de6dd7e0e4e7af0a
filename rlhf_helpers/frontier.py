"""The reward–KL frontier (the DPO paper's Figure 2, redrawn on the course's models), over seeds.

One point per method and strength of its KL regularization, each the mean of `SEEDS` runs with their spread:
PPO-GT (the course's PPO on the true reward, a fixed β on a summed k1 penalty in the reward), PPO-RM (the same PPO
against a reward model trained on DPO's pairs: the DPO paper's "PPO"), GRPO (TRL, a β on the per-token-mean k3 in
the loss), DPO (the β inside its loss, pairs sampled once from the initial policy) and online DPO (the same pairs
budget, re-sampled from the current policy in rounds). Every β is fixed: no adaptive controller. The same number is
not the same pressure across methods, so the methods are compared on the frontier, not at one shared β. Every run
is scored by the same `evaluate()` on the same held-out prompts and sampling seed; the gold rater of notebook 07
also scores each run's held-out samples. `benchmarks/frontier.py` runs the sweep; the smoke profile's measured
runs ship with the package (`results.load_result("frontier", "smoke")`), for notebook 08.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .dpo import pairs_for_run, train_online_dpo
from .faults import hold_output
from .models import load_gold, model_ids
from .overoptimization import HUB, SMOKE
from .ppo_loop import make_state, train
from .profiles import get_profile
from .reward_model import train_reward_model
from .runs import RunInputs, write_results
from .stats import seed_interval
from .train import RunSpec, run

SWEEP = {"ppo": [0.1, 0.3, 1.0], "ppo_rm": [0.01, 0.03, 0.1], "grpo": [0.03, 0.1, 0.3], "dpo": [0.05, 0.1, 0.3],
         "online_dpo": [0.05, 0.1, 0.3]}
"""The KL coefficient of each run, per algorithm (PPO's is fixed: no adaptive controller)."""
SEEDS = (0, 1, 2)
"""Seeds per point: each point of the frontier is the mean of these runs, with their spread."""


ONLINE_DPO_ROUNDS = 4
"""Rounds of online DPO: the pairs budget of offline DPO, re-sampled from the current policy this many times."""


def run_point(algo: str, beta: float, profile_name: str, out: Path, seed: int = 0) -> dict:
    """One run of the sweep (reused if its folder already holds a finished one), scored by the classifier and the
    gold rater on the held-out prompts."""
    field = {"dpo": {"dpo_beta": beta}, "online_dpo": {"dpo_beta": beta}}.get(
        algo, {"init_kl_coef": beta, "kl_target": None})
    profile = get_profile(profile_name, **field)
    folder = out / f"{algo}-beta{beta:g}" / f"seed-{seed}"
    if (folder / "summary.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
    elif algo in ("ppo_rm", "online_dpo"):
        summary = _custom_run(algo, profile, folder, seed)
    else:  # an unfinished point restarts
        summary = run(RunSpec(algo, seed=seed, resume=True), profile, folder, progress=False)
    samples = pd.read_csv(folder / "samples.csv", keep_default_na=False)
    judge = load_gold(profile)
    gold = judge((samples["prompt"] + samples["response_after"]).tolist()).float().mean().item()
    gold_before = judge((samples["prompt"] + samples["response_before"]).tolist()).float().mean().item()
    return {"algo": algo, "beta": beta, "seed": seed,
            **{k: summary["after"][k] for k in ("mean_reward", "positive_rate", "kl", "ref_perplexity")},
            "gold": gold, "gold_before": gold_before, "reward_before": summary["before"]["mean_reward"],
            "train_seconds": summary["train_seconds"], "episodes": summary["episodes"],
            "labelled_completions": summary.get("labelled_completions", summary["episodes"])}


def _custom_run(algo: str, profile, folder: Path, seed: int) -> dict:
    """The two runs `train.run` has no algorithm for, evaluated exactly like its runs (same held-out prompts,
    sampling seed and classifier):

    ppo_rm      the DPO paper's "PPO" baseline: a reward model trained (TRL's RewardTrainer, notebook 07's main
                recipe) on **the pairs DPO trains on** (`dpo.pairs_for_run`, same seed), then the course's PPO with
                that reward model as its reward at a fixed β. The true reward only ever labelled those pairs. The
                reward model starts from the **policy's** backbone, as the DPO paper's and InstructGPT's do: DPO too
                must learn sentiment inside the policy, and the classifier that labels the pairs and scores the
                frontier lends neither method its features.
    online_dpo  `dpo.train_online_dpo`: DPO's pairs budget in `ONLINE_DPO_ROUNDS` rounds, each sampled from the
                current policy and labelled by the classifier.
    Writes summary.json (before, after, train_seconds, episodes, labelled_completions) and samples.csv."""
    config = dataclasses.replace(profile.ppo, seed=seed)
    with hold_output(folder, f"{algo} run"):
        inputs = RunInputs(profile, config).load()
        before = inputs.evaluate(inputs.policy)
        start = time.perf_counter()
        if algo == "ppo_rm":
            recipe = SMOKE if profile.offline else HUB
            pairs = pairs_for_run(inputs)
            with tempfile.TemporaryDirectory(prefix="reward-model-") as scratch:
                _, scorer = train_reward_model(model_ids(profile).policy, pairs, scratch, epochs=recipe.rm_epochs,
                                               learning_rate=recipe.rm_learning_rate, seed=seed)
            state = make_state(config, inputs.policy, inputs.reference, inputs.tokenizer, scorer,
                               inputs.train_prompts["input_ids"])
            train(state, progress=False)
            info = {"episodes": config.steps * config.batch_size, "reward_model_pairs": len(pairs),
                    "labelled_completions": len(pairs) * profile.dpo.samples_per_prompt}
        else:
            online = train_online_dpo(inputs, rounds=ONLINE_DPO_ROUNDS)
            info = {"episodes": online["completions"], "labelled_completions": online["completions"], **online}
        train_seconds = time.perf_counter() - start
        after = inputs.evaluate(inputs.policy)
        summary = {"algo": algo, "profile": profile.name, "seed": seed, "before": before.metrics,
                   "after": after.metrics, "train_seconds": train_seconds, **info}
        write_results(folder, summary, before, after)
    return summary


MARKERS = {"ppo": "o", "ppo_rm": "D", "grpo": "s", "dpo": "^", "online_dpo": "v"}
NAMES = {"ppo": "PPO-GT (true reward)", "ppo_rm": "PPO-RM (RM on DPO's pairs)", "grpo": "GRPO (true reward)",
         "dpo": "DPO (offline pairs)", "online_dpo": "online DPO"}
METRICS = ("mean_reward", "positive_rate", "kl", "gold", "ref_perplexity")


def frontier_points(points: list[dict]) -> list[dict]:
    """Runs (one dict per algorithm, β and seed) -> one point per (algorithm, β): the mean over its seeds of each
    metric (`METRICS`) and, as `<metric>_std`, the across-seed standard deviation (0 with one seed)."""
    groups = {}
    for p in points:
        groups.setdefault((p["algo"], p["beta"]), []).append(p)
    out = []
    for (algo, beta), runs in groups.items():
        row = {"algo": algo, "beta": beta, "seeds": len(runs)}
        for key in METRICS:
            values = np.array([r[key] for r in runs], dtype=float)
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return out


CONTRAST_POINTS = 5
"""KL values, evenly spaced over the range two methods share, at which `contrast` compares them."""


def method_curve(means: list[dict], algo: str) -> list[dict]:
    """One method's mean points (`frontier_points`), by KL."""
    return sorted((m for m in means if m["algo"] == algo), key=lambda m: m["kl"])


def at_kl(curve: list[dict], kl: float, key: str = "mean_reward") -> float:
    """A method's mean (or `<metric>_std`) at `kl`, interpolated linearly between its points."""
    return float(np.interp(kl, [m["kl"] for m in curve], [m[key] for m in curve]))


def contrast(means: list[dict], a: str, b: str, key: str = "mean_reward", points: int = CONTRAST_POINTS) -> dict:
    """Methods `a` and `b` compared across the whole KL range both reach, not at one end of it: at `points` KL values
    from the larger of their smallest KLs to the smaller of their largest, the difference a − b of `key` and its 95 %
    interval over the seeds (`stats.seed_interval`; each method's across-seed spread, interpolated, as two
    independent means).

    `verdict`: "a" or "b" when that method is ahead by more than the noise at every compared KL, "tie" when no
    difference exceeds it, "mixed" otherwise; "apart" (and no rows) when the ranges do not overlap."""
    ca, cb = method_curve(means, a), method_curve(means, b)
    if not ca or not cb:
        raise ValueError(f"No frontier points for {a if not ca else b!r}.")
    low, high = max(ca[0]["kl"], cb[0]["kl"]), min(ca[-1]["kl"], cb[-1]["kl"])
    if low > high:
        return {"a": a, "b": b, "key": key, "low": low, "high": high, "rows": [], "verdict": "apart"}
    seeds = min(m["seeds"] for m in ca + cb)
    rows = []
    for kl in np.linspace(low, high, points if high > low else 1):
        diff = at_kl(ca, kl, key) - at_kl(cb, kl, key)
        noise = seed_interval(float(np.hypot(at_kl(ca, kl, f"{key}_std"), at_kl(cb, kl, f"{key}_std")))
                              / np.sqrt(seeds), seeds)
        rows.append({"kl": float(kl), "a": at_kl(ca, kl, key), "b": at_kl(cb, kl, key), "difference": diff,
                     "noise": noise})
    ahead = ["a" if r["difference"] > r["noise"] else "b" if -r["difference"] > r["noise"] else "tie" for r in rows]
    verdict = ahead[0] if len(set(ahead)) == 1 else "mixed"
    return {"a": a, "b": b, "key": key, "low": low, "high": high, "seeds": seeds, "rows": rows, "verdict": verdict}


def describe_contrast(reading: dict, what: str = "") -> str:
    """One sentence for a `contrast` reading: who is ahead, over which KL range, by how much against the noise."""
    a, b = NAMES.get(reading["a"], reading["a"]).split(" (")[0], NAMES.get(reading["b"], reading["b"]).split(" (")[0]
    label = {"mean_reward": "reward", "gold": "gold"}.get(reading["key"], reading["key"])
    head = f"{what}: " if what else ""
    if reading["verdict"] == "apart":
        return (f"{head}{a} and {b} reach no common KL ({reading['low']:.1f} nats is above {reading['high']:.1f}): "
                f"the frontier cannot compare them at equal KL.")
    rows = reading["rows"]
    span = f"from {reading['low']:.1f} to {reading['high']:.1f} nats ({len(rows)} KL values, {reading['seeds']} seeds)"
    differences = ", ".join(f"{r['difference']:+.2f} ± {r['noise']:.2f}" for r in rows)
    if reading["verdict"] == "mixed":
        parts = []
        for name, other, sign in ((a, b, 1), (b, a, -1)):
            kls = [r["kl"] for r in rows if sign * r["difference"] > r["noise"]]
            if kls:
                parts.append(f"{name} has more {label} than {other} at {len(kls)} of the {len(rows)} KL values "
                             f"({', '.join(f'{kl:.1f}' for kl in kls)} nats)")
        verdict = "; ".join(parts) + ", and they are within the noise at the rest,"
    else:
        verdict = {"a": f"{a} has more {label} than {b} at every KL",
                   "b": f"{b} has more {label} than {a} at every KL",
                   "tie": f"{a} and {b} are within the noise of each other in {label} at every KL"}[reading["verdict"]]
    if not head:
        verdict = verdict[0].upper() + verdict[1:]
    return f"{head}{verdict} {span}; {a} − {b}: {differences} (± the 95 % interval over seeds)."


NARROW = 1.2
"""An "ahead" whose smallest difference is under this many times its interval is called narrow where it is read."""


def read_paper_ordering(readings: list[dict]) -> str:
    """The DPO paper's ordering (DPO above both PPO baselines) held against each `contrast` of DPO with PPO-GT or
    PPO-RM in reward: the direction of the difference at every shared KL (the paper's, the opposite, or mixed) and
    whether it is beyond its interval there."""
    parts = []
    for r in readings:
        if r["key"] != "mean_reward" or "dpo" not in (r["a"], r["b"]) or not r["rows"]:
            continue
        other = r["b"] if r["a"] == "dpo" else r["a"]
        if other not in ("ppo", "ppo_rm"):
            continue
        sign = 1 if r["a"] == "dpo" else -1  # DPO − other at each KL
        dpo_ahead = [sign * x["difference"] > 0 for x in r["rows"]]
        direction = ("the paper's direction (DPO ahead)" if all(dpo_ahead) else
                     "the opposite direction (DPO behind)" if not any(dpo_ahead) else "mixed directions")
        beyond = sum(abs(x["difference"]) > x["noise"] for x in r["rows"])
        name = NAMES[other].split(" (")[0]
        where = "" if direction == "mixed directions" else " at every shared KL"
        parts.append(f"DPO against {name}: {direction}{where}, beyond its interval at {beyond} of {len(r['rows'])}")
    if not parts:
        return ""
    return "Against the DPO paper's ordering, in reward: " + "; ".join(parts) + "."


def summarize_contrasts(readings: list[dict]) -> list[str]:
    """`contrast` readings grouped by verdict, one line per verdict: who is ahead at every shared KL, who only at some
    (and tied at the rest), who is within the noise throughout, which reach no common KL. Each pair of methods is
    named once, with the measures ("reward", "gold") that share its verdict; the per-KL differences belong in a
    table beside it."""
    short = {reading[side]: NAMES.get(reading[side], reading[side]).split(" (")[0]
             for reading in readings for side in ("a", "b")}
    label = {"mean_reward": "reward", "gold": "gold"}
    groups: dict[str, dict[str, list[str]]] = {"ahead": {}, "some": {}, "cross": {}, "tie": {}, "apart": {}}
    for r in readings:
        a, b, measure = short[r["a"]], short[r["b"]], label.get(r["key"], r["key"])
        if r["verdict"] in ("a", "b"):
            winner, loser = (a, b) if r["verdict"] == "a" else (b, a)
            tight = min(r["rows"], key=lambda x: abs(x["difference"]) / max(x["noise"], 1e-12), default=None)
            narrowly = (f", narrowly at {tight['kl']:.1f} nats: {tight['difference']:+.2f} ± {tight['noise']:.2f}"
                        if tight and abs(tight["difference"]) < NARROW * tight["noise"] else "")
            groups["ahead"].setdefault(f"{winner} over {loser}", []).append(measure + narrowly)
        elif r["verdict"] == "mixed":
            signs = {1 if x["difference"] > 0 else -1 for x in r["rows"] if abs(x["difference"]) > x["noise"]}
            if len(signs) == 1:
                winner, loser = (a, b) if signs == {1} else (b, a)
                groups["some"].setdefault(f"{winner} over {loser}", []).append(measure)
            else:
                groups["cross"].setdefault(f"{a} and {b}", []).append(measure)
        else:
            groups[r["verdict"]].setdefault(f"{a} and {b}", []).append(measure)
    heads = {"ahead": "Ahead at every shared KL, each difference outside its interval",
             "some": "Ahead at some KL values, within the noise at the rest",
             "cross": "Each ahead somewhere (they cross)", "tie": "Within the noise at every shared KL",
             "apart": "No common KL to compare at"}
    return [f"{heads[g]}: " + "; ".join(f"{pair} ({', '.join(measures)})" for pair, measures in pairs.items()) + "."
            for g, pairs in groups.items() if pairs]


def verdict_label(reading: dict) -> str:
    """A `contrast` verdict in words for a table: the method ahead by name, "tie", "mixed" or "apart"."""
    short = {side: NAMES.get(reading[side], reading[side]).split(" (")[0] for side in ("a", "b")}
    return f"{short[reading['verdict']]} ahead" if reading["verdict"] in short else reading["verdict"]


def plot_frontier(points: list[dict], title: str = "", extra: tuple[dict, ...] = ()):
    """Reward (left) and gold reward (right) against KL to the reference (a log axis when every KL is positive): one
    line per method, each point the mean over its seeds with the across-seed standard deviation as error bars in both
    directions, its β beside it.
    `extra`: single runs drawn in black over the lines, each a dict with `label`, `marker`, `kl` and the `mean_reward`
    and/or `gold` it has. One legend for both panels, below them, so that it covers no line."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    offsets = [(4, 4), (4, -11), (-30, 4), (-30, -11), (4, 12)]  # one per method, so that β labels do not collide
    for (algo, marker), offset in zip(MARKERS.items(), offsets):
        rows = sorted((p for p in frontier_points(points) if p["algo"] == algo), key=lambda p: p["kl"])
        if not rows:
            continue
        seeds = min(p["seeds"] for p in rows)
        for ax, key in zip(axes, ("mean_reward", "gold")):
            line = ax.errorbar([p["kl"] for p in rows], [p[key] for p in rows], xerr=[p["kl_std"] for p in rows],
                               yerr=[p[f"{key}_std"] for p in rows], marker=marker, capsize=3,
                               label=f"{NAMES[algo]} (mean ± sd, {seeds} seed{'s' * (seeds > 1)})")
            for p in rows:
                ax.annotate(f"β={p['beta']:g}", (p["kl"], p[key]), fontsize=7, xytext=offset,
                            textcoords="offset points", color=line[0].get_color())
    if points:
        axes[0].axhline(points[0]["reward_before"], color="grey", ls=":", label="before training")
        axes[1].axhline(points[0]["gold_before"], color="grey", ls=":", label="before training")
    for single in extra:
        for ax, key in zip(axes, ("mean_reward", "gold")):
            if key in single:
                ax.plot(single["kl"], single[key], single["marker"], ms=12, color="k", label=single["label"])
    axes[0].set(title="Reward the runs were trained for (the classifier)", ylabel="held-out mean reward")
    axes[1].set(title="Gold rater (never trained on)", ylabel="held-out mean gold reward")
    kls = [p["kl"] for p in frontier_points(points)] + [single["kl"] for single in extra]
    log_x = bool(kls) and min(kls) > 0  # on a log axis the points at low KL, where most methods' lowest β sit, part
    for ax in axes:
        if log_x:
            ax.set_xscale("log")
            ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if min(kls) / 1.5 <= t <= max(kls) * 1.5]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("KL to the reference (nats per response" + (", log scale)" if log_x else ")"))
    handles, labels = {}, []
    for ax in axes:  # each label once, in the order drawn
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    fig.legend([handles[label] for label in labels], labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 + 0.04 * ((len(labels) + 2) // 3), 1, 1))
    return fig


def frontier_table(points: list[dict]) -> pd.DataFrame:
    """The frontier in one row per method: its β values in the order of their KL (the strongest pull first), and at
    each the mean reward, KL and gold over its seeds (as "a / b / c"), with the true-reward queries a run spends."""
    rows, all_means = {}, frontier_points(points)
    for algo in MARKERS:
        means = sorted((m for m in all_means if m["algo"] == algo), key=lambda m: m["kl"])
        if not means:
            continue
        queries = sorted({p["labelled_completions"] for p in points if p["algo"] == algo})
        rows[NAMES[algo]] = {"β": " / ".join(f"{m['beta']:g}" for m in means),
                             "reward": " / ".join(f"{m['mean_reward']:+.2f}" for m in means),
                             "KL": " / ".join(f"{m['kl']:.1f}" for m in means),
                             "gold": " / ".join(f"{m['gold']:+.2f}" for m in means),
                             "seeds": min(m["seeds"] for m in means),
                             "true-reward queries": ", ".join(f"{q:,}" for q in queries)}
    return pd.DataFrame.from_dict(rows, orient="index")


def read_best_gold(means: list[dict]) -> str:
    """The frontier point with the highest mean gold, and every other point within the 95 % interval of the
    difference (`stats.seed_interval`; each point's across-seed spread, as two independent means): a leader, not a
    winner, when some are."""
    top = max(means, key=lambda m: m["gold"])
    tied = [m for m in means if m is not top and top["gold"] - m["gold"] <= seed_interval(
        float(np.hypot(top["gold_std"], m["gold_std"])) / np.sqrt(min(top["seeds"], m["seeds"])),
        min(top["seeds"], m["seeds"]))]
    head = (f"Highest mean gold: {NAMES[top['algo']]} at β = {top['beta']:g}, {top['gold']:+.2f} (sd "
            f"{top['gold_std']:.2f} over {top['seeds']} seeds) at {top['kl']:.1f} nats")
    if not tied:
        return head + "; no other point is within the 95 % interval of the difference."
    return head + "; within the 95 % interval of the difference: " + ", ".join(
        f"{NAMES[m['algo']].split(' (')[0]} at β = {m['beta']:g} ({m['gold']:+.2f})" for m in tied) + "."
