"""Reward-model over-optimization, measured: best-of-n and PPO against a learned proxy, scored by a gold judge.

    python -m rlhf_helpers.overoptimization --profile smoke --out runs/overopt

Gao, Schulman & Hilton (2022) found that as a policy is optimized against a learned reward model, the proxy reward
keeps rising while the true ("gold") reward rises, peaks and falls, and that with d = √KL(π‖π_init):

    best-of-n:  R_gold(d) = d (α − β d)             KL_bon = log n − (n − 1) / n
    RL:         R_gold(d) = d (α − β log d)

(R measured from its value at d = 0.) The study, with the course's own machinery:
1. preferences  two completions of the initial policy per training prompt, labelled by a noisy Bradley–Terry rater
                over the gold judge (`reward_model.make_preference_pairs`);
2. proxies      two reward models trained on them with TRL's RewardTrainer (`reward_model.train_reward_model`): the
                *main* one on all pairs, and a *weak* one fit harder to the first `weak_rm_pairs` (fewer data, overfit);
3. best-of-n    `bon_max_n` samples per held-out prompt; for n = 1, 2, 4, … each proxy's favourite of each n;
4. RL           the hand-built PPO loop (`ppo_loop`) with a proxy as its reward at a fixed β (0 and > 0),
                evaluating proxy, gold and KL on the held-out prompts every few steps;
5. fits         Gao et al.'s two forms, least squares, one per curve.
Writes summary.json, curves.png, samples.csv and the two reward models (reward_models/main, reward_models/weak,
`save_pretrained` folders) to --out. Notebook 07 calls the same functions step by step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .data import check_imdb_source, heldout_prompts
from .evaluation import evaluate
from .faults import (OutputBusyError, OutputExistsError, atomic_write, busy_message, explain_faults, hold_output,
                     output_holder, run_cli, write_text_atomic)
from .models import gold_model_id, load_policy, model_ids
from .plots import save_figure
from .ppo_loop import make_state, train
from .profiles import PROFILE_NAMES, Sampling, get_profile
from .reward import repeated_word_share
from .reward_model import make_preference_pairs, pair_accuracy, train_reward_model
from .runs import RunInputs
from .sampling import sample_with
from .stats import seed_interval


@dataclass(frozen=True)
class OveroptConfig:
    """Settings of the over-optimization study (the defaults are the smoke profile's, on 2 CPU cores)."""

    seed: int = 0
    """Seeds sampling, labels, reward-model training and PPO."""
    n_pairs: int = 2048
    """Training pairs of the main reward model: one per training prompt, two completions of the initial policy."""
    n_heldout_pairs: int = 256
    """Held-out pairs (from held-out test prompts) for the reward models' accuracy."""
    label_noise: float = 0.25
    """τ of the simulated rater: P(a ≻ b) = σ((g_a − g_b)/τ), g the gold judge's score. Larger τ, noisier labels."""
    rm_epochs: int = 2
    """Passes of RewardTrainer over the pairs (main reward model)."""
    rm_learning_rate: float = 3e-4
    """Learning rate of the main reward model."""
    weak_rm_pairs: int = 1024
    """Pairs of the *weak* reward model (the first ones of the same pairs), which is fit harder to less data."""
    weak_rm_epochs: int = 6
    """Passes over its pairs."""
    weak_rm_learning_rate: float = 1e-3
    """Its learning rate."""
    bon_prompts: int = 32
    """Held-out prompts for best-of-n."""
    bon_max_n: int = 64
    """Samples per prompt; n runs over the powers of two up to this."""
    rl_runs: tuple[tuple[str, float], ...] = (("main", 0.0), ("main", 0.1), ("weak", 0.0))
    """PPO runs against a proxy: (reward model, fixed KL coefficient β). β = 0: nothing holds the policy back."""
    rl_steps: int = 60
    """PPO steps per run."""
    rl_eval_every: int = 6
    """Held-out evaluation (proxy, gold, KL) every this many steps: enough points (11 per run) to see a peak."""
    n_eval_prompts: int = 128
    """Held-out prompts of each RL evaluation."""

    def __post_init__(self):
        for name in ("n_pairs", "n_heldout_pairs", "rm_epochs", "weak_rm_pairs", "weak_rm_epochs", "bon_prompts",
                     "bon_max_n", "rl_steps", "rl_eval_every", "n_eval_prompts"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"OveroptConfig.{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.bon_max_n & (self.bon_max_n - 1):
            raise ValueError(f"bon_max_n must be a power of two (n runs over 1, 2, 4, ...), got {self.bon_max_n}.")
        if self.label_noise < 0:
            raise ValueError(f"label_noise must be >= 0, got {self.label_noise}.")
        if self.weak_rm_pairs > self.n_pairs:
            raise ValueError(f"weak_rm_pairs ({self.weak_rm_pairs}) must not exceed n_pairs ({self.n_pairs}).")
        if not self.rl_runs or any(rm not in ("main", "weak") or beta < 0 for rm, beta in self.rl_runs):
            raise ValueError(f"rl_runs must be non-empty (reward model, β) pairs with reward model 'main' or 'weak' "
                             f"and β >= 0, got {self.rl_runs!r}.")


SMOKE = OveroptConfig()
HUB = OveroptConfig(n_pairs=8192, n_heldout_pairs=512, rm_epochs=1, rm_learning_rate=1e-5, weak_rm_pairs=1024,
                    weak_rm_epochs=4, weak_rm_learning_rate=5e-5, bon_prompts=128,
                    rl_runs=(("main", 0.0), ("main", 0.2), ("weak", 0.0)), rl_steps=100, rl_eval_every=10,
                    n_eval_prompts=256)
"""gpu/cpu: the DPO paper's IMDB setting (GPT-2 policy, siebert/sentiment-roberta-large-english as the judge),
a reward model from lvwerra/distilbert-imdb's backbone at a GPT-2-scale learning rate. Not yet run: no GPU here."""


def bon_kl(n: int) -> float:
    """Analytic KL of best-of-n to the base policy: log n − (n − 1)/n (Stiennon et al. 2020, appendix G.3)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return math.log(n) - (n - 1) / n


def gao_design(d: np.ndarray, form: str) -> np.ndarray:
    """Columns [d, −d²] (best-of-n) or [d, −d·log d] (RL), so that R = design @ [α, β]; d·log d → 0 at d = 0."""
    d = np.asarray(d, float)
    if form == "bon":
        second = d**2
    elif form == "rl":
        second = np.where(d > 0, d * np.log(np.maximum(d, 1e-300)), 0.0)
    else:
        raise ValueError(f"form must be 'bon' or 'rl', got {form!r}.")
    return np.stack([d, -second], axis=-1)


def fit_gao(d: np.ndarray, r: np.ndarray, form: str) -> dict:
    """Least-squares fit of Gao et al.'s forms to gold-reward gains r (relative to d = 0) at d = √KL.

    form "bon": r = d(α − βd);  form "rl": r = d(α − β log d). Points at d <= 0 carry no information (both forms are
    0 there) and are dropped. Returns α, β, r² and the number of points; NaNs with fewer than 3 points."""
    d, r = np.asarray(d, float), np.asarray(r, float)
    keep = d > 0
    d, r = d[keep], r[keep]
    if len(d) < 3:
        return {"alpha": float("nan"), "beta": float("nan"), "r2": float("nan"), "points": int(len(d))}
    design = gao_design(d, form)
    (alpha, beta), *_ = np.linalg.lstsq(design, r, rcond=None)
    pred = design @ np.array([alpha, beta])
    ss_res, ss_tot = float(((r - pred) ** 2).sum()), float(((r - r.mean()) ** 2).sum())
    return {"alpha": float(alpha), "beta": float(beta), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "points": int(len(d))}


def best_of_n_rows(proxy_scores: torch.Tensor, gold_scores: torch.Tensor) -> list[dict]:
    """(prompts, max_n) scores -> one row per n = 1, 2, 4, …: the mean proxy and gold score of the proxy's pick.

    A prompt's max_n samples form max_n / n disjoint groups of n, so every sample is used at every n."""
    prompts, max_n = proxy_scores.shape
    rows, n = [], 1
    while n <= max_n:
        groups = max_n // n
        p = proxy_scores[:, : groups * n].reshape(prompts, groups, n)
        g = gold_scores[:, : groups * n].reshape(prompts, groups, n)
        pick = p.argmax(-1, keepdim=True)
        rows.append({"n": n, "kl": bon_kl(n), "proxy": p.gather(-1, pick).mean().item(),
                     "gold": g.gather(-1, pick).mean().item()})
        n *= 2
    return rows


@torch.no_grad()
def best_of_n(policy, tokenizer, proxy, gold, query_ids, max_n: int = 64, sampling: Sampling = Sampling(),
              seed: int = 0) -> tuple[list[dict], dict]:
    """Sample `max_n` completions per prompt; for n = 1, 2, 4, … pick the proxy's favourite in each group of n.

    Returns one row per n (n, kl, proxy, gold) and the raw samples and scores ((prompts, max_n) each), so that
    another reward model can pick from the same samples: `best_of_n_rows(other(raw["texts"]).view(...), ...)`."""
    repeated = [q for q in query_ids for _ in range(max_n)]
    samples = sample_with(policy, tokenizer, repeated, dataclasses.replace(sampling, batch_size=512), seed)
    proxy_scores = proxy(samples.texts).float().cpu().view(len(query_ids), max_n)
    gold_scores = gold(samples.texts).float().cpu().view(len(query_ids), max_n)
    return best_of_n_rows(proxy_scores, gold_scores), {"proxy": proxy_scores, "gold": gold_scores,
                                                       "texts": samples.texts}


def best_of_n_per_model(policy, tokenizer, proxies: dict, gold, query_ids, max_n: int = 64,
                        sampling: Sampling = Sampling(), seed: int = 0) -> list[dict]:
    """`best_of_n` for several reward models on the **same** samples: rows (rm, n, kl, proxy, gold), by model."""
    names = list(proxies)
    first, raw = best_of_n(policy, tokenizer, proxies[names[0]], gold, query_ids, max_n, sampling, seed)
    rows = [{"rm": names[0], **r} for r in first]
    for name in names[1:]:
        scores = proxies[name](raw["texts"]).float().cpu().view(len(query_ids), max_n)
        rows += [{"rm": name, **r} for r in best_of_n_rows(scores, raw["gold"])]
    return rows


@dataclass
class RLRun:
    """Held-out evaluations of one PPO run against a proxy."""

    rm: str
    """Which reward model was the reward ("main" or "weak")."""
    beta: float
    rows: list = field(default_factory=list)
    """One dict per evaluation: run, rm, beta, step, kl, proxy, gold, repeated_words (the mean repeated-word share
    of the scored texts, `reward.repeated_word_share`)."""
    samples: dict = field(default_factory=dict)
    """step -> DataFrame of the held-out samples (prompt, response, proxy, gold, and the gold's components:
    sentiment, repeated, nll; see `reward.GoldRater.components`)."""

    @property
    def name(self) -> str:
        return f"{self.rm} RM, β={self.beta:g}"


def rl_against_proxy(inputs: RunInputs, proxy, gold, beta: float, config: OveroptConfig, rm: str = "main",
                     progress: bool = False) -> RLRun:
    """The course's hand-built PPO with a reward model as reward and a fixed β, from a fresh copy of the initial
    policy; proxy, gold and KL on the held-out prompts (`inputs.heldout`) before training and every `rl_eval_every`
    steps (same sampling seed each time)."""
    profile = inputs.profile
    ppo_config = dataclasses.replace(profile.ppo, seed=config.seed, steps=config.rl_steps, init_kl_coef=beta,
                                     kl_target=None)
    policy, reference = load_policy(profile, proxy.device), load_policy(profile, proxy.device)
    state = make_state(ppo_config, policy, reference, inputs.tokenizer, proxy, inputs.train_prompts["input_ids"])
    run = RLRun(rm, beta)

    def record(step: int) -> None:
        ev = evaluate(policy, reference, inputs.tokenizer, proxy, inputs.heldout,
                      ppo_config.sampling(profile.eval_batch_size))
        texts = (ev.samples["prompt"] + ev.samples["response"]).tolist()
        parts = {k: v.float().cpu() for k, v in gold.components(texts).items()}
        gold_scores = gold.score(parts)
        run.rows.append({"run": run.name, "rm": rm, "beta": beta, "step": step, "kl": ev.metrics["kl"],
                         "proxy": ev.metrics["mean_reward"], "gold": gold_scores.mean().item(),
                         "repeated_words": float(np.mean([repeated_word_share(t) for t in texts]))})
        run.samples[step] = ev.samples.rename(columns={"reward": "proxy"}).assign(
            gold=gold_scores.numpy(), **{k: v.numpy() for k, v in parts.items()})

    record(0)
    train(state, on_step=lambda rec: record(state.step) if state.step % config.rl_eval_every == 0 else None,
          progress=progress)
    if run.rows[-1]["step"] != state.step:
        record(state.step)
    return run


def gold_peak_and_end(rows: list[dict]) -> dict:
    """Where the gold reward peaked, and whether it then fell while the proxy stayed above its value at the peak
    (Gao et al.'s signature of over-optimization)."""
    peak = max(rows, key=lambda r: r["gold"])
    end = rows[-1]
    return {"peak_step": peak["step"], "peak_gold": peak["gold"], "peak_proxy": peak["proxy"], "peak_kl": peak["kl"],
            "end_step": end["step"], "end_gold": end["gold"], "end_proxy": end["proxy"], "end_kl": end["kl"],
            "overoptimized": bool(end["gold"] < peak["gold"] and end["proxy"] > peak["proxy"])}


def seed_bands(rl_by_seed: dict) -> list[dict]:
    """seed -> that seed's PPO rows (`RLRun.rows`, all runs) => one row per (run, step): the mean and the
    standard deviation over seeds of proxy, gold, KL and repeated-word share (steps every seed evaluated)."""
    by_key = {}
    for rows in rl_by_seed.values():
        for row in rows:
            by_key.setdefault((row["run"], row["step"]), []).append(row)
    bands = []
    for (run, step), rows in by_key.items():
        if len(rows) != len(rl_by_seed):
            continue
        band = {"run": run, "rm": rows[0]["rm"], "beta": rows[0]["beta"], "step": step, "seeds": len(rows)}
        for key in ("proxy", "gold", "kl", "repeated_words"):
            values = np.array([r[key] for r in rows if key in r], dtype=float)
            band[f"{key}_mean"] = float(values.mean()) if len(values) else float("nan")
            band[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        bands.append(band)
    return sorted(bands, key=lambda b: (list(dict.fromkeys(r for r, _ in by_key)).index(b["run"]), b["step"]))


TURNOVER_WINDOW = 3
"""Evaluations averaged at each end of the yardstick: around the gold peak, and the last ones."""


def _window(rows: list[dict], centre: int, width: int = TURNOVER_WINDOW) -> list[dict]:
    """`width` consecutive evaluations centred on index `centre`, shifted to stay inside the run."""
    start = min(max(0, centre - width // 2), max(0, len(rows) - width))
    return rows[start:start + width]


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def turnover(rows: list[dict], peak_step: int, width: int = TURNOVER_WINDOW) -> dict:
    """One run read at checkpoints fixed in advance: the mean gold and proxy over the `width` evaluations around
    `peak_step` (chosen without this run) against those over its last `width` evaluations. `fall` is the gold lost
    from the peak window to the end, `proxy_rise` what the proxy gained meanwhile."""
    steps = [r["step"] for r in rows]
    if peak_step not in steps:
        raise ValueError(f"peak_step {peak_step} is not one of this run's evaluation steps {steps}.")
    peak, end = _window(rows, steps.index(peak_step), width), rows[-width:]
    return {"peak_step": peak_step, "peak_gold": _mean(peak, "gold"), "end_gold": _mean(end, "gold"),
            "peak_proxy": _mean(peak, "proxy"), "end_proxy": _mean(end, "proxy"),
            "peak_kl": _mean(peak, "kl"), "end_kl": _mean(end, "kl"),
            "fall": _mean(peak, "gold") - _mean(end, "gold"), "proxy_rise": _mean(end, "proxy") - _mean(peak, "proxy")}


def mean_curve_peak(runs: list[list[dict]]) -> int:
    """The step where the seeds' mean gold reward peaks (all runs evaluated at the same steps)."""
    steps = [r["step"] for r in runs[0]]
    mean_gold = np.mean([[r["gold"] for r in rows] for rows in runs], axis=0)
    return steps[int(np.argmax(mean_gold))]


def paired_turnover(rows_by_seed: dict, width: int = TURNOVER_WINDOW) -> dict:
    """Over-optimization over seeds, one yardstick: each seed's `turnover` with its peak step chosen on the *other*
    seeds' mean gold curve (leave one out, so a seed's own noise cannot pick its peak), then the seeds' falls and
    proxy rises paired within each seed. `fall_interval`: the 95 % interval's half-width (`seed_interval`). `shown`:
    the mean fall is beyond that interval (the interval excludes zero) and the proxy rose on every seed (Gao et al.'s
    signature: the proxy still climbs while the gold turns over)."""
    seeds = sorted(rows_by_seed)
    if len(seeds) < 2:
        raise ValueError(f"paired_turnover needs at least two seeds, got {len(seeds)}.")
    per_seed = {s: turnover(rows_by_seed[s], mean_curve_peak([rows_by_seed[o] for o in seeds if o != s]), width)
                for s in seeds}
    falls = np.array([per_seed[s]["fall"] for s in seeds])
    rises = np.array([per_seed[s]["proxy_rise"] for s in seeds])
    stderr = float(falls.std(ddof=1) / np.sqrt(len(seeds)))
    interval = seed_interval(stderr, len(seeds))
    return {"seeds": len(seeds), "per_seed": per_seed, "fall_mean": float(falls.mean()), "fall_stderr": stderr,
            "fall_interval": interval, "proxy_rise_mean": float(rises.mean()),
            "proxy_rose_on_every_seed": bool((rises > 0).all()),
            "shown": bool(falls.mean() > interval and (rises > 0).all())}


def runs_by_seed(rl_by_seed: dict) -> dict:
    """seed -> that seed's PPO rows (all runs) => run name -> {seed: that run's rows, by step}."""
    out = {}
    for seed, rows in rl_by_seed.items():
        for row in rows:
            out.setdefault(row["run"], {}).setdefault(seed, []).append(row)
    return {run: {seed: sorted(rows, key=lambda r: r["step"]) for seed, rows in seeds.items()}
            for run, seeds in out.items()}


def paired_over_seeds(rl_by_seed: dict) -> dict:
    """Every PPO run of the study read with the one yardstick, `paired_turnover`, over the seeds: run -> reading."""
    return {run: paired_turnover(seeds) for run, seeds in runs_by_seed(rl_by_seed).items()}


def own_run_turnover(rows: list[dict], gold_by_step: dict, shipped_rows_by_seed: dict,
                     width: int = TURNOVER_WINDOW) -> dict:
    """The notebook's own run on the study's yardstick, its peak step chosen on the shipped seeds' mean gold curve
    (never on this run), read two ways that the notebook names apart:

    - on its own: `own_noise` is twice the standard error of the fall from this run's held-out samples (`gold_by_step`:
      step -> the gold scores of that evaluation's samples); `shown_on_its_own` when the fall exceeds it and the proxy
      rose;
    - against the band: the shipped seeds' falls at the same peak step, their mean and standard deviation;
      `inside_band` when this run's fall is within two standard deviations of their mean."""
    peak = mean_curve_peak(list(shipped_rows_by_seed.values()))
    reading = turnover(rows, peak, width)
    steps = [r["step"] for r in rows]
    windows = (_window(rows, steps.index(peak), width), rows[-width:])
    # the standard error of a window's mean gold: its evaluations' sample variances over their sizes, averaged
    se = [np.sqrt(sum(np.var(gold_by_step[r["step"]], ddof=1) / len(gold_by_step[r["step"]]) for r in w)) / len(w)
          for w in windows]
    falls = np.array([turnover(r, peak, width)["fall"] for r in shipped_rows_by_seed.values()])
    band_sd = float(falls.std(ddof=1)) if len(falls) > 1 else float("nan")
    own_noise = 2 * float(np.hypot(*se))
    return {**reading, "own_noise": own_noise,
            "shown_on_its_own": bool(reading["fall"] > own_noise and reading["proxy_rise"] > 0),
            "band_fall_mean": float(falls.mean()), "band_fall_sd": band_sd,
            "inside_band": bool(abs(reading["fall"] - falls.mean()) <= 2 * band_sd)}


def turnover_table(runs: list, shipped: dict) -> pd.DataFrame:
    """Each of this notebook's PPO runs on the study's one yardstick, in two verdicts named apart: the shipped seeds'
    (`shipped["reading"]`, paired over seeds) and this run's own (`own_run_turnover`, its peak step chosen on the
    shipped seeds)."""
    by_run = runs_by_seed({int(seed): s["rl"] for seed, s in shipped["by_seed"].items()})
    table = []
    for run in runs:
        band = shipped["reading"][run.name]
        own = own_run_turnover(run.rows, {step: frame["gold"].to_numpy() for step, frame in run.samples.items()},
                               by_run[run.name])
        table.append({"run": run.name, "peak step": own["peak_step"],
                      "seeds: gold fall ± 95 %": f"{band['fall_mean']:+.2f} ± {band['fall_interval']:.2f}",
                      "seeds: proxy rise": f"{band['proxy_rise_mean']:+.2f}", "seeds: shown": band["shown"],
                      "this run: gold fall ± 2 SE": f"{own['fall']:+.2f} ± {own['own_noise']:.2f}",
                      "this run: proxy rise": f"{own['proxy_rise']:+.2f}", "this run: shown": own["shown_on_its_own"],
                      "this run inside the seeds' band": own["inside_band"]})
    return pd.DataFrame(table).set_index("run")


def seed_means(reading: dict) -> dict:
    """A `paired_turnover` reading's per-seed values (peak/end gold, proxy, KL, fall), averaged over its seeds, each
    with `<key>_stderr`, its standard error across the seeds."""
    per_seed = list(reading["per_seed"].values())
    out = {}
    for key in per_seed[0]:
        if key != "peak_step":
            values = np.array([r[key] for r in per_seed], dtype=float)
            out[key], out[f"{key}_stderr"] = float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
    return out


def kl_penalty_reading(shipped: dict, free_run: str, penalized_run: str) -> dict:
    """Gao et al.'s question of a KL penalty, on the shipped seeds: does the penalized run end with more gold than the
    unpenalized one had *at the same KL* (read off the unpenalized run's mean curve on the way up)? `verdict`: "more",
    "less" or "same" (a difference within its 95 % interval: the penalized run's end gold and the unpenalized
    curve's gold at that KL, each across seeds, as two independent means, with the 95 % t interval of the seeds)."""
    free, held = seed_means(shipped["reading"][free_run]), seed_means(shipped["reading"][penalized_run])
    band = sorted((b for b in shipped["bands"] if b["run"] == free_run), key=lambda b: b["kl_mean"])
    kls = [b["kl_mean"] for b in band]
    at_same_kl = float(np.interp(held["end_kl"], kls, [b["gold_mean"] for b in band]))
    free_stderr = float(np.interp(held["end_kl"], kls, [b["gold_std"] / np.sqrt(b["seeds"]) for b in band]))
    seeds = len(shipped["reading"][penalized_run]["per_seed"])
    gap = held["end_gold"] - at_same_kl
    noise = seed_interval(float(np.hypot(held["end_gold_stderr"], free_stderr)), seeds)
    return {"free": free, "penalized": held, "free_gold_at_same_kl": at_same_kl, "gap": gap, "noise": noise,
            "verdict": "more" if gap > noise else "less" if gap < -noise else "same"}


def defences_table(shipped: dict) -> pd.DataFrame:
    """Section 9's table: every PPO run of the shipped seeds on the one yardstick (`paired_turnover`), averaged over
    the seeds (`seed_means`): where its gold peaked and ended, in KL and gold, and its fall with the 95 % interval."""
    rows = {}
    for run, reading in shipped["reading"].items():
        m = seed_means(reading)
        at_end = all(r["fall"] == 0 for r in reading["per_seed"].values())  # the peak window is the last: no turn
        rows[run] = {"KL at the peak": round(m["peak_kl"], 1), "gold at the peak": round(m["peak_gold"], 2),
                     "KL at the end": round(m["end_kl"], 1), "gold at the end": round(m["end_gold"], 2),
                     "gold fall ± 95 %": "none: highest at the end" if at_end else
                     f"{reading['fall_mean']:+.2f} ± {reading['fall_interval']:.2f}",
                     "fall shown": reading["shown"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(f"run ({len(shipped['seeds'])} seeds)")


def read_defences(shipped: dict, free_run: str, penalized_run: str, weak_run: str | None = None) -> list[str]:
    """Section 9's reading, two sentences at most: what the KL penalty buys at the same KL (`kl_penalty_reading`),
    and the weak reward model's fall against the main one's, paired by seed (`paired_fall_difference`)."""
    penalty = kl_penalty_reading(shipped, free_run, penalized_run)
    seeds = len(shipped["seeds"])
    verdict = {"more": "more gold than the unpenalized runs had at the same KL (Gao et al. found a penalty does not "
                       "move the gold–KL frontier)",
               "less": "less gold than the unpenalized runs had at the same KL",
               "same": f"gold that {seeds} seeds cannot tell apart from the unpenalized runs' at the same KL (Gao et "
                       "al. found a penalty acts like stopping early)"}[penalty["verdict"]]
    lines = [f"KL penalty: the penalized runs end at {penalty['penalized']['end_kl']:.1f} nats with "
             f"{penalty['gap']:+.2f} ± {penalty['noise']:.2f} against the unpenalized curve at that KL: {verdict}."]
    if weak_run:
        diff = paired_fall_difference(shipped["reading"], weak_run, free_run)
        lines.append(f"Less data, fit harder: the weak model's fall minus the main one's, paired by seed, is "
                     f"{diff['mean']:+.2f} ± {diff['interval']:.2f}, " +
                     ("beyond the noise" if diff["beyond"] else "within the noise") +
                     "; suggestive at most, since data and fitting changed together.")
    return lines


def all_rl_samples(runs: list[RLRun]) -> pd.DataFrame:
    """Every held-out sample of every evaluation of the PPO runs, one row each (run, step, prompt, response, proxy,
    gold, sentiment, repeated, nll): what `rater_sensitivity` re-reads under other rater constants."""
    return pd.concat([frame.assign(run=run.name, step=step) for run in runs for step, frame in run.samples.items()],
                     ignore_index=True)


RATER_VARIANTS = {
    "as calibrated": {},
    "fluency weight ×0.5": {"fluency_weight": 0.5},
    "fluency weight ×2": {"fluency_weight": 2.0},
    "fluency free −0.5 nat": {"fluency_free": -0.5},
    "fluency free +0.5 nat": {"fluency_free": 0.5},
    "repetition penalty ×0.5": {"penalty": 0.5},
    "repetition penalty ×2": {"penalty": 2.0},
    "no repetition penalty": {"penalty": 0.0},
    "no fluency penalty": {"fluency_weight": 0.0},
    "the judge alone": {"penalty": 0.0, "fluency_weight": 0.0},
}
"""The gold rater's constants varied one at a time (weights and the repetition penalty scaled, the free nll shifted),
then each penalty removed, and both: how much of a fall is the judge's own, and how much each penalty's."""


def _variant(rater, change: dict) -> dict:
    constants = {"penalty": rater.penalty, "allowed": rater.allowed, "fluency_free": rater.fluency_free,
                 "fluency_weight": rater.fluency_weight}
    for key, value in change.items():
        constants[key] = constants[key] + value if key == "fluency_free" else constants[key] * value
    return constants


def rater_sensitivity(samples_by_seed: dict, rater, variants: dict = RATER_VARIANTS) -> list[dict]:
    """Does the lesson hinge on the gold rater's constants? The studies' saved samples (seed -> `all_rl_samples`
    frame) re-scored under each variant's constants (`reward.GoldRater.score`, no model is run again), then each PPO
    run read with `paired_turnover`. One row per (variant, run): fall_mean, fall_stderr, shown."""
    rows = []
    for name, change in variants.items():
        constants = _variant(rater, change)
        by_run = {}
        for seed, frame in samples_by_seed.items():
            parts = {k: torch.tensor(frame[k].to_numpy(), dtype=torch.float32)
                     for k in ("sentiment", "repeated", "nll")}
            scored = frame.assign(gold=rater.score(parts, **constants).numpy())
            for run, group in scored.groupby("run", sort=False):
                curve = group.groupby("step").agg(gold=("gold", "mean"), proxy=("proxy", "mean")).reset_index()
                by_run.setdefault(run, {})[seed] = [{"step": int(r.step), "gold": r.gold, "proxy": r.proxy, "kl": 0.0}
                                                    for r in curve.itertuples()]
        for run, curves in by_run.items():
            reading = paired_turnover(curves)
            rows.append({"variant": name, "run": run, "fall_mean": reading["fall_mean"],
                         "fall_stderr": reading["fall_stderr"], "fall_interval": reading["fall_interval"],
                         "shown": reading["shown"]})
    return rows


MIN_FIT_POINTS = 8
"""Fewest points per curve for a Gao et al. fit: two parameters and a turnover need more than a handful."""
MIN_FIT_R2 = 0.7
"""Least r² on every seed for a fit to be drawn: a form that misses the curve's shape describes nothing."""


def fitted_peak(fit: dict, form: str) -> float:
    """Where a Gao et al. fit's gain peaks, in d = √KL: α / 2β for best-of-n's d(α − βd), exp(α/β − 1) for RL's
    d(α − β log d); infinite when β <= 0 (no turnover)."""
    alpha, beta = fit["alpha"], fit["beta"]
    if not beta > 0:
        return math.inf
    return alpha / (2 * beta) if form == "bon" else math.exp(min(alpha / beta - 1, 50.0))


def measured_peak_window(rows: list[dict]) -> tuple[float, float, float]:
    """A gold curve's highest evaluation and its neighbours, in d = √KL: (d before, d at the peak, d after)."""
    d = np.sqrt(np.maximum([r["kl"] for r in rows], 0))
    i = int(np.argmax([r["gold"] for r in rows]))
    return float(d[max(i - 1, 0)]), float(d[i]), float(d[min(i + 1, len(d) - 1)])


def _curves(data: dict) -> dict:
    """A seed's data => curve name (as `fit_all` names it) -> (its rows in order, its form)."""
    curves = {}
    for rm in dict.fromkeys(r.get("rm", "main") for r in data["bon"]):
        curves[f"best-of-n, {rm} RM"] = ([r for r in data["bon"] if r.get("rm", "main") == rm], "bon")
    for run in dict.fromkeys(r["run"] for r in data["rl"]):
        curves[f"PPO, {run}"] = ([r for r in data["rl"] if r["run"] == run], "rl")
    return curves


def fit_intervals(by_seed: dict) -> dict:
    """seed -> {"bon": rows, "rl": rows} => per curve, Gao et al.'s fit on each seed and its spread: points, the
    mean and range of α, β and r² over seeds, the fitted and measured peaks (`fitted_peak`, `measured_peak_window`;
    min and max over seeds), `meaningful` (at least `MIN_FIT_POINTS` points, and on every seed β > 0 — a turnover
    inside the measured range, not a line extrapolated past it —, r² >= `MIN_FIT_R2`, and the fitted peak within the
    measured peak's neighbouring evaluations: a form that puts the turn elsewhere does not describe it), and `why_not`
    (the first reason it is not, or "")."""
    per_curve, peaks = {}, {}
    for data in by_seed.values():
        curves = _curves(data)
        for curve, fit in fit_all(data["bon"], data["rl"])["by_curve"].items():
            per_curve.setdefault(curve, []).append(fit)
            rows, form = curves[curve]
            before, at, after = measured_peak_window(rows)
            fitted = fitted_peak(fit, form)
            peaks.setdefault(curve, []).append((fitted, at, before <= fitted <= after))
    out = {}
    for curve, fits in per_curve.items():
        row = {"seeds": len(fits), "points": int(min(f["points"] for f in fits))}
        for key in ("alpha", "beta", "r2"):
            values = np.array([f[key] for f in fits], dtype=float)
            values = values[~np.isnan(values)]  # a fit that failed on a seed is left out; none fitted gives NaN
            row.update({f"{key}_mean": float(values.mean()) if values.size else float("nan"),
                        f"{key}_min": float(values.min()) if values.size else float("nan"),
                        f"{key}_max": float(values.max()) if values.size else float("nan")})
        fitted, measured, placed = zip(*peaks[curve])
        row.update({"fitted_peak_min": min(fitted), "fitted_peak_max": max(fitted),
                    "measured_peak_min": min(measured), "measured_peak_max": max(measured),
                    "peak_placed": sum(placed)})
        why = (f"only {row['points']} points (a fit needs {MIN_FIT_POINTS})" if row["points"] < MIN_FIT_POINTS else
               "its fitted β is not positive on every seed: no turnover inside the measured range"
               if not row["beta_min"] > 0 else
               f"the form misses the curve's shape (r² down to {row['r2_min']:.2f} across seeds, below {MIN_FIT_R2})"
               if not row["r2_min"] >= MIN_FIT_R2 else
               f"the form puts the peak at d = {row['fitted_peak_min']:.1f}–{row['fitted_peak_max']:.1f} where the "
               f"gold peaks at d = {row['measured_peak_min']:.1f}–{row['measured_peak_max']:.1f} (next to the "
               f"measured peak on {row['peak_placed']} of {row['seeds']} seeds): the fall comes later and faster than "
               "the form allows" if row["peak_placed"] < row["seeds"] else "")
        row["meaningful"], row["why_not"] = not why, why
        out[curve] = row
    return out


def plot_seed_bands(bands: list[dict], rl_rows: list[dict] | None = None):
    """One column per PPO run: proxy (top) and gold (bottom) reward against the step, the mean over seeds with a
    ±1 standard-deviation band, and this notebook's own run drawn over it (dots)."""
    runs = list(dict.fromkeys(b["run"] for b in bands))
    fig, axes = plt.subplots(2, len(runs), figsize=(4.4 * len(runs), 6.5), sharex=True, squeeze=False)
    for col, run in enumerate(runs):
        rows = [b for b in bands if b["run"] == run]
        steps = np.array([b["step"] for b in rows])
        for row_i, key in enumerate(("proxy", "gold")):
            ax = axes[row_i, col]
            mean = np.array([b[f"{key}_mean"] for b in rows])
            std = np.array([b[f"{key}_std"] for b in rows])
            color = COLORS[col % len(COLORS)]
            ax.plot(steps, mean, "-", color=color, label=f"mean of {rows[0]['seeds']} seeds (shipped)")
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, label="± 1 sd over seeds")
            mine = [r for r in (rl_rows or []) if r["run"] == run]
            if mine:
                ax.plot([r["step"] for r in mine], [r[key] for r in mine], "o", color="k", ms=4, label="this run")
            label = "gold reward (judge − penalties)" if key == "gold" else "proxy reward"
            ax.set(title=run if row_i == 0 else None, ylabel=label if col == 0 else None)
            ax.legend(fontsize=7)
        axes[1, col].set_xlabel("PPO step")
    fig.tight_layout()
    return fig


def _gain_fit(rows: list[dict], form: str) -> dict:
    start = rows[0]["gold"]  # the gold reward at d = 0 (n = 1, or step 0)
    return fit_gao(np.sqrt(np.maximum([r["kl"] for r in rows], 0)), np.array([r["gold"] for r in rows]) - start,
                   form)


def fit_all(bon: list[dict], rl_rows: list[dict]) -> dict:
    """Gao et al.'s fits of the gold-reward gain against d = √KL, one per curve: `by_curve` holds every best-of-n
    curve (one per reward model) and every PPO run. `bon` and `rl` name the headline ones: best-of-n on the main
    reward model, and the PPO run whose gold reward fell furthest from its peak (the first run when none fell)."""
    by_curve = {}
    for rm in dict.fromkeys(r.get("rm", "main") for r in bon):
        by_curve[f"best-of-n, {rm} RM"] = _gain_fit([r for r in bon if r.get("rm", "main") == rm], "bon")
    runs = {}
    for row in rl_rows:
        runs.setdefault(row["run"], []).append(row)
    for name, rows in runs.items():
        by_curve[f"PPO, {name}"] = _gain_fit(rows, "rl")
    first_rm = next(iter(dict.fromkeys(r.get("rm", "main") for r in bon)))
    fall = {name: max(r["gold"] for r in rows) - rows[-1]["gold"] for name, rows in runs.items()}
    headline = max(runs, key=lambda name: fall[name]) if any(v > 0 for v in fall.values()) else next(iter(runs))
    return {"bon": {**by_curve[f"best-of-n, {first_rm} RM"], "curve": f"best-of-n, {first_rm} RM"},
            "rl": {**by_curve[f"PPO, {headline}"], "curve": f"PPO, {headline}"}, "by_curve": by_curve}


COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive")


def plot_overoptimization(bon: list[dict], rl_rows: list[dict], fits: dict, draw_fits=None):
    """Proxy (top) and gold (bottom) reward against d = √KL, best-of-n (left) and the PPO runs (right); a gold
    curve's Gao et al. fit (dotted) only if its name is in `draw_fits` (default: every curve). One colour per reward
    model or run."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5), sharex="col")
    curves = [(0, f"{rm} RM", [r for r in bon if r.get("rm", "main") == rm], f"best-of-n, {rm} RM", "bon")
              for rm in dict.fromkeys(r.get("rm", "main") for r in bon)]
    curves += [(1, name, [r for r in rl_rows if r["run"] == name], f"PPO, {name}", "rl")
               for name in dict.fromkeys(r["run"] for r in rl_rows)]
    for i, (col, label, rows, key, form) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        d = np.sqrt(np.maximum([r["kl"] for r in rows], 0))
        axes[0, col].plot(d, [r["proxy"] for r in rows], "s-", color=color, label=label)
        axes[1, col].plot(d, [r["gold"] for r in rows], "o-", color=color, label=label)
        fit = fits["by_curve"][key]
        if np.isfinite(fit["alpha"]) and (draw_fits is None or key in draw_fits):
            grid = np.linspace(0, d.max(), 100)
            axes[1, col].plot(grid, rows[0]["gold"] + gao_design(grid, form) @ [fit["alpha"], fit["beta"]], ":",
                              color=color, label=f"fit: α={fit['alpha']:.2f}, β={fit['beta']:.2f}, r²={fit['r2']:.2f}")
    axes[0, 0].set(title="Best-of-n (n = 1, 2, 4, …, 64) against each reward model", ylabel="proxy reward (the RM)")
    axes[0, 1].set(title="PPO against each reward model (fixed β)")
    axes[1, 0].set(ylabel="gold reward (judge − penalties)")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("d = √KL to the initial policy (nats$^{1/2}$)")
    fig.tight_layout()
    return fig


HELDOUT_PAIRS_SEED = 99
"""The held-out pairs' prompts: test-split prompts drawn with their own seed, apart from the evaluation prompts."""


def study_pairs(profile, config: OveroptConfig, policy, tokenizer, gold, train_prompts: list[list[int]]):
    """Step 1: the noisy rater's preference pairs, (training pairs, held-out pairs). Training pairs come from the
    first `n_pairs` training prompts, held-out pairs from `n_heldout_pairs` test-split prompts."""
    if config.n_pairs > len(train_prompts):
        raise ValueError(f"n_pairs={config.n_pairs} but only {len(train_prompts)} training prompts; lower n_pairs.")
    sampling = profile.ppo.sampling(batch_size=128)
    pair_prompts = heldout_prompts(profile, tokenizer, n=config.n_heldout_pairs, seed=HELDOUT_PAIRS_SEED)
    pairs = make_preference_pairs(policy, tokenizer, gold, train_prompts[: config.n_pairs], config.label_noise,
                                  sampling, seed=config.seed)
    test_pairs = make_preference_pairs(policy, tokenizer, gold, pair_prompts.input_ids, config.label_noise,
                                       sampling, seed=config.seed + 7)  # other sampling draws than the training pairs'
    return pairs, test_pairs


def reward_model_recipes(config: OveroptConfig, pairs) -> dict:
    """Step 2's two proxies: name -> (pairs, epochs, learning rate). *main* on all pairs; *weak* fit harder to the
    first `weak_rm_pairs` of them (Gao et al.: less data, over-optimized sooner)."""
    return {"main": (pairs, config.rm_epochs, config.rm_learning_rate),
            "weak": (pairs.subset(config.weak_rm_pairs), config.weak_rm_epochs, config.weak_rm_learning_rate)}


def train_proxy(classifier_id: str, recipe: tuple, test_pairs, config: OveroptConfig, scratch: str):
    """Step 2, one proxy: TRL's RewardTrainer on the recipe's pairs -> (trainer, reward model, held-out accuracy)."""
    rm_pairs, epochs, lr = recipe
    trainer, proxy = train_reward_model(classifier_id, rm_pairs, scratch, epochs=epochs, learning_rate=lr,
                                        seed=config.seed)
    accuracy = {**pair_accuracy(proxy, test_pairs), "n_heldout_pairs": len(test_pairs), "n_pairs": len(rm_pairs),
                "epochs": epochs, "learning_rate": lr}  # n_pairs: the pairs it was trained on
    return trainer, proxy, accuracy


def study_best_of_n(profile, config: OveroptConfig, policy, tokenizer, proxies: dict, gold, heldout) -> list[dict]:
    """Step 3: best-of-n for every proxy on the same `bon_max_n` samples of the first `bon_prompts` held-out
    prompts."""
    return best_of_n_per_model(policy, tokenizer, proxies, gold, heldout.input_ids[: config.bon_prompts],
                               config.bon_max_n, profile.ppo.sampling(), seed=config.seed)


def most_overoptimized(runs: list[RLRun]) -> RLRun:
    """The run the study shows samples of: among the runs `gold_peak_and_end` calls over-optimized (if any), the
    one whose gold reward fell furthest from its peak."""
    def key(run):
        peak = gold_peak_and_end(run.rows)
        return peak["overoptimized"], peak["peak_gold"] - peak["end_gold"]
    return max(runs, key=key)


def gold_breakdown(run: RLRun, rater, steps: dict) -> pd.DataFrame:
    """What the gold rater saw at each of `steps` (label -> evaluation step) of `run`, from its saved samples: the mean
    proxy, the judge's sentiment, the repetition penalty, the reader's nll, the fluency penalty and the gold."""
    rows = {}
    for label, step in steps.items():
        frame = run.samples[step]
        parts = {k: torch.tensor(frame[k].to_numpy(), dtype=torch.float32) for k in ("sentiment", "repeated", "nll")}
        repetition = rater.penalty * (parts["repeated"] - rater.allowed).clamp(min=0)
        fluency = (rater.fluency_weight * (parts["nll"] - rater.fluency_free).clamp(min=0)
                   if rater.fluency_weight else torch.zeros_like(parts["nll"]))
        rows[label] = {"step": step, "proxy": frame["proxy"].mean(), "sentiment": parts["sentiment"].mean().item(),
                       "repetition penalty": repetition.mean().item(), "reader nll": parts["nll"].mean().item(),
                       "fluency penalty": fluency.mean().item(), "gold": rater.score(parts).mean().item()}
    return pd.DataFrame(rows).T.astype({"step": int})


def hacking_samples(run: RLRun, peak: dict, rows: int = 16):
    """The same held-out prompts at the gold peak and at the end of `run`, side by side."""
    at_peak, at_end = run.samples[peak["peak_step"]], run.samples[peak["end_step"]]
    return pd.DataFrame({"prompt": at_peak["prompt"],
                         "response_at_gold_peak": at_peak["response"], "gold_at_peak": at_peak["gold"].round(3),
                         "proxy_at_peak": at_peak["proxy"].round(3),
                         "response_at_end": at_end["response"], "gold_at_end": at_end["gold"].round(3),
                         "proxy_at_end": at_end["proxy"].round(3)}).head(rows)


def run_study(profile, out: Path | str, config: OveroptConfig | None = None, progress: bool = False,
              log=print) -> dict:
    """The whole study (see the module docstring); writes summary.json, curves.png, samples.csv to `out`.

    Holds `out`'s lock while it runs (a second study into it is refused at once); Ctrl-C, a full disk and CUDA out
    of memory are raised as `faults.CourseError`s that say where the study was and what to do."""
    config = config or (SMOKE if profile.offline else HUB)
    out = Path(out)
    if (out / "summary.json").exists():
        raise OutputExistsError(f"{out} already holds a finished study (summary.json); choose another --out.")
    check_imdb_source(profile)
    phase = {"now": "loading the models"}
    again = (f"The study keeps no checkpoints and writes its results only at the end, so nothing finished is in {out} "
             f"and nothing can be resumed: run the same command again (the same --out is fine).")
    faults = explain_faults(out, where=lambda: f"while {phase['now']}", next_step=lambda: again,
                            memory=lambda: "The study's batch sizes are its profile's: run a smaller profile "
                                           "(--profile cpu or smoke) or on a GPU with more memory.")
    with hold_output(out, "over-optimization study"), faults:
        if (out / "summary.json").exists():  # another process finished it while we waited
            raise OutputExistsError(f"{out} already holds a finished study (summary.json); choose another --out.")
        return _study(profile, out, config, progress, log, phase)


def _study(profile, out: Path, config: OveroptConfig, progress: bool, log, phase: dict) -> dict:
    start = time.perf_counter()
    classifier_id = model_ids(profile).reward
    gold_model_id(profile)  # a missing or broken gold-judge folder is named before anything loads
    inputs = RunInputs(profile, dataclasses.replace(profile.ppo, seed=config.seed), n_heldout=config.n_eval_prompts)
    inputs.load("tokenizer", "policy", "gold", "train_prompts", "heldout")
    tokenizer, policy, gold, heldout = inputs.tokenizer, inputs.policy, inputs.gold, inputs.heldout
    train_prompts = inputs.train_prompts["input_ids"]
    seconds = {}

    t = time.perf_counter()
    phase["now"] = "sampling the preference pairs"
    pairs, test_pairs = study_pairs(profile, config, policy, tokenizer, gold, train_prompts)
    seconds["preferences"] = time.perf_counter() - t
    log(f"1. {len(pairs):,} training pairs; their noisy labels agree with the gold rater's noiseless preference on "
        f"{pairs.label_agrees_with_gold:.1%} (τ = {config.label_noise}) [{seconds['preferences']:.0f} s]")

    t = time.perf_counter()
    phase["now"] = "training the reward models"
    proxies, accuracy = {}, {}
    for rm, recipe in reward_model_recipes(config, pairs).items():
        with tempfile.TemporaryDirectory(prefix="reward-model-") as scratch:
            _, proxies[rm], accuracy[rm] = train_proxy(classifier_id, recipe, test_pairs, config, scratch)
    seconds["reward_models"] = time.perf_counter() - t
    log(f"2. reward models: held-out pair accuracy against the gold rater {accuracy['main']['vs_gold']:.3f} (main, "
        f"{len(pairs):,} pairs), {accuracy['weak']['vs_gold']:.3f} (weak, {config.weak_rm_pairs:,} pairs) "
        f"[{seconds['reward_models']:.0f} s]")

    t = time.perf_counter()
    phase["now"] = "running best-of-n"
    bon = study_best_of_n(profile, config, policy, tokenizer, proxies, gold, heldout)
    main_rows = [r for r in bon if r["rm"] == "main"]
    seconds["best_of_n"] = time.perf_counter() - t
    log(f"3. best-of-{config.bon_max_n} on the main RM: proxy {main_rows[0]['proxy']:+.2f} → "
        f"{main_rows[-1]['proxy']:+.2f}, gold {main_rows[0]['gold']:+.2f} → {main_rows[-1]['gold']:+.2f} "
        f"[{seconds['best_of_n']:.0f} s]")

    t = time.perf_counter()
    runs = []
    for i, (rm, beta) in enumerate(config.rl_runs, 1):
        phase["now"] = f"running PPO against the {rm} reward model (β = {beta:g}, run {i} of {len(config.rl_runs)})"
        runs.append(rl_against_proxy(inputs, proxies[rm], gold, beta, config, rm=rm, progress=progress))
        peak = gold_peak_and_end(runs[-1].rows)
        log(f"4. PPO, {runs[-1].name}: proxy {runs[-1].rows[0]['proxy']:+.2f} → {peak['end_proxy']:+.2f}; gold "
            f"{runs[-1].rows[0]['gold']:+.2f} → peak {peak['peak_gold']:+.2f} (step {peak['peak_step']}) → "
            f"{peak['end_gold']:+.2f}; KL {peak['end_kl']:.1f}")
    seconds["rl"] = time.perf_counter() - t
    rl_rows = [row for run in runs for row in run.rows]

    fits = fit_all(bon, rl_rows)
    peaks = {run.name: gold_peak_and_end(run.rows) for run in runs}
    shown = most_overoptimized(runs)
    samples = hacking_samples(shown, peaks[shown.name], rows=len(heldout))
    seconds["total"] = time.perf_counter() - start
    summary = {"profile": profile.name, "config": asdict(config), "gold_model": gold_model_id(profile),
               "rm": {"heldout_pair_accuracy": accuracy["main"]["vs_gold"], "n_pairs": len(pairs),
                      "n_heldout_pairs": len(test_pairs), "label_agreement_with_gold": pairs.label_agrees_with_gold,
                      "init": classifier_id, "by_model": accuracy},
               "bon": bon, "rl": rl_rows, "fits": fits, "gold_peaks": peaks, "samples_from": shown.name,
               "overoptimized": any(p["overoptimized"] for p in peaks.values()), "seconds": seconds}
    phase["now"] = "writing its results"
    for rm, scorer in proxies.items():  # the learned rewards, loadable with AutoModelForSequenceClassification
        with atomic_write(out / "reward_models" / rm) as tmp:
            scorer.model.save_pretrained(tmp)
            scorer.tokenizer.save_pretrained(tmp)
    summary["reward_models"] = {rm: f"reward_models/{rm}" for rm in proxies}
    with atomic_write(out / "samples.csv") as tmp:
        samples.to_csv(tmp, index=False)
    with atomic_write(out / "rl_samples.csv.gz") as tmp:  # every evaluation's samples, for `rater_sensitivity`
        all_rl_samples(runs).to_csv(tmp, index=False, compression="gzip")
    save_figure(plot_overoptimization(bon, rl_rows, fits), out / "curves.png")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))  # last: it marks a finished study
    return summary


def main(argv: list[str] | None = None) -> dict:
    """The CLI: expected faults print a few lines and exit 2 (130 for Ctrl-C); RLHF_DEBUG=1 shows tracebacks."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda: _main(argv))


def _main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.overoptimization",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="gpu, cpu or smoke (default: $RLHF_PROFILE, else gpu with CUDA, cpu without)")
    parser.add_argument("--out", required=True, type=Path, help="folder for summary.json, curves.png, samples.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rl-steps", type=int, default=None, help="PPO steps per run (default: the profile's)")
    args = parser.parse_args(argv)
    if (args.out / "summary.json").exists():
        parser.error(f"{args.out} already holds a finished study (summary.json); choose another --out.")
    holder = output_holder(args.out)
    if holder:
        raise OutputBusyError(busy_message(args.out, holder, "study"))  # a fault, not a usage error
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}.")
    if args.rl_steps is not None and args.rl_steps <= 0:
        parser.error(f"--rl-steps must be a positive integer, got {args.rl_steps}.")
    profile = get_profile(args.profile)
    base = SMOKE if profile.offline else HUB
    config = dataclasses.replace(base, seed=args.seed, **({"rl_steps": args.rl_steps} if args.rl_steps else {}))
    print(profile.describe(), flush=True)
    summary = run_study(profile, args.out, config, progress=sys.stderr.isatty(), log=lambda m: print(m, flush=True))
    print(json.dumps({k: summary[k] for k in ("rm", "fits", "gold_peaks", "overoptimized", "seconds")}, indent=1))
    return summary


if __name__ == "__main__":
    main()


def read_best_of_n(bon: list[dict]) -> str:
    """One sentence on best-of-n's rows (rm, n, kl, proxy, gold): for each reward model, where its picks' gold reward
    peaks over n, and whether that is the largest n tried (no turnover within the KL best-of-n reached here)."""
    parts, top, turned = [], max(r["n"] for r in bon), False
    for rm in dict.fromkeys(r["rm"] for r in bon):
        rows = sorted((r for r in bon if r["rm"] == rm), key=lambda r: r["n"])
        best = max(rows, key=lambda r: r["gold"])
        turned |= best["n"] < top
        parts.append(f"{rm}: gold {rows[0]['gold']:+.2f} at n = 1 -> {rows[-1]['gold']:+.2f} at n = {top}, " +
                     ("highest at the largest n" if best["n"] == top else f"highest at n = {best['n']}"))
    kl = max(r["kl"] for r in bon)
    return (f"Best-of-n, up to {kl:.1f} nats: " + "; ".join(parts) + (
        ". The gold turns down within this range for at least one reward model." if turned else
        ". Neither turns over this close to the initial policy: best-of-n here stays on the rising side of Gao et "
        "al.'s curve, and PPO below goes much further."))


def paired_fall_difference(reading: dict, run_a: str, run_b: str) -> dict:
    """The gold fall of `run_a` minus `run_b` on the shipped seeds' one yardstick (`paired_turnover` readings),
    paired by seed (both runs of a seed share its preference pairs): per-seed differences, their mean, its standard
    error and 95 % interval (`seed_interval`), and `beyond`: whether the interval excludes zero."""
    a, b = reading[run_a]["per_seed"], reading[run_b]["per_seed"]
    differences = np.array([a[seed]["fall"] - b[seed]["fall"] for seed in a if seed in b], dtype=float)
    stderr = float(differences.std(ddof=1) / np.sqrt(len(differences)))
    mean, interval = float(differences.mean()), seed_interval(stderr, len(differences))
    return {"per_seed": differences.tolist(), "mean": mean, "stderr": stderr, "interval": interval,
            "seeds": len(differences), "beyond": abs(mean) > interval}


def read_rater_sensitivity(rows: list[dict], runs: tuple[str, ...]) -> str:
    """`rater_sensitivity` read for `runs`: in how many variants each run's fall is shown, and its fall with the
    judge alone (both penalties removed), the share of the fall that is the judge's own."""
    parts, alone, mostly_penalties = [], [], True
    for run in runs:
        mine = [r for r in rows if r["run"] == run]
        held = [r["variant"] for r in mine if r["shown"]]
        failed = [r["variant"] for r in mine if not r["shown"]]
        parts.append(f"{run} in {len(held)} of {len(mine)}" + (
            f" (held: {', '.join(held)}; not: {', '.join(failed)})" if 0 < len(held) < len(mine) else ""))
        judge = next((r for r in mine if r["variant"] == "the judge alone"), None)
        calibrated = next((r for r in mine if r["variant"] == "as calibrated"), None)
        if judge:
            alone.append(f"{run} {judge['fall_mean']:+.2f} ± {judge['fall_interval']:.2f}")
            mostly_penalties &= bool(calibrated) and judge["fall_mean"] < 0.3 * max(calibrated["fall_mean"], 1e-9)
    text = ("Re-scored with the rater's constants varied one at a time and each penalty removed, the fall is shown "
            "beyond the noise for " + "; for ".join(parts) + ".")
    if alone:
        text += (" With the judge alone, no penalty, the fall is " + ", ".join(alone) + (
            ": most of each fall is what the penalties charge (repetition, unreadable text), not the judge's sentiment."
            if mostly_penalties else "."))
    return text
