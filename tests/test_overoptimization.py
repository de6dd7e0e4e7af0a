"""The over-optimization study: its command writes what issue 11 lists, refuses to overwrite, and rejects bad input."""

import json

import pandas as pd
import pytest
import torch

from rlhf_helpers.overoptimization import (OveroptConfig, fit_all, gold_peak_and_end, main, paired_turnover, run_study,
                                           turnover)

TINY = OveroptConfig(n_pairs=128, n_heldout_pairs=32, rm_epochs=1, weak_rm_pairs=64, weak_rm_epochs=1, bon_prompts=8,
                     bon_max_n=8, rl_runs=(("main", 0.0), ("weak", 0.06)), rl_steps=2, rl_eval_every=1,
                     n_eval_prompts=16)


@pytest.mark.slow
def test_the_study_writes_summary_curves_and_samples_and_never_overwrites(tmp_path, monkeypatch):
    from rlhf_helpers import get_profile

    profile = get_profile("smoke", batch_size=16, mini_batch_size=8)
    summary = run_study(profile, tmp_path / "study", TINY, log=lambda *_: None)
    written = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert written["rm"]["n_pairs"] == 128 and 0 <= written["rm"]["heldout_pair_accuracy"] <= 1
    assert written["rm"]["by_model"]["weak"]["n_pairs"] == 64
    # both reward models pick from the same samples: n = 1 is the same plain sample mean of the gold judge
    assert [(r["rm"], r["n"]) for r in written["bon"]] == [(m, n) for m in ("main", "weak") for n in (1, 2, 4, 8)]
    assert written["bon"][0]["gold"] == pytest.approx(written["bon"][4]["gold"])
    assert all(set(r) >= {"n", "kl", "proxy", "gold"} for r in written["bon"])
    # two runs, evaluated before training and after each of the 2 steps
    assert [(r["rm"], r["beta"], r["step"]) for r in written["rl"]] == [
        (m, b, s) for m, b in (("main", 0.0), ("weak", 0.06)) for s in (0, 1, 2)]
    assert all(set(r) >= {"run", "beta", "step", "kl", "proxy", "gold"} for r in written["rl"])
    assert all(r["kl"] == pytest.approx(0.0, abs=1e-5) for r in written["rl"] if r["step"] == 0)
    assert set(written["fits"]) >= {"bon", "rl"} and set(written["fits"]["bon"]) >= {"alpha", "beta", "r2"}
    assert set(written["fits"]["rl"]) >= {"alpha", "beta", "r2"} and len(written["fits"]["by_curve"]) == 4
    assert written["fits"] == json.loads(json.dumps(summary["fits"]))
    assert (tmp_path / "study" / "curves.png").stat().st_size > 10_000
    from transformers import AutoModelForSequenceClassification

    for rm in ("main", "weak"):  # the learned rewards are kept, as plain transformers folders
        assert written["reward_models"][rm] == f"reward_models/{rm}"
        saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "study" / "reward_models" / rm)
        assert saved.config.num_labels == 1
    header = (tmp_path / "study" / "samples.csv").read_text().splitlines()[0]
    assert header.startswith("prompt,response_at_gold_peak,gold_at_peak,proxy_at_peak,response_at_end")

    before = (tmp_path / "study" / "summary.json").read_text()
    with pytest.raises(SystemExit) as refused:
        main(["--profile", "smoke", "--out", str(tmp_path / "study")])
    assert refused.value.code == 2
    with pytest.raises(FileExistsError, match="choose another --out"):
        run_study(profile, tmp_path / "study", TINY)
    assert (tmp_path / "study" / "summary.json").read_text() == before


@pytest.mark.parametrize("argv, message", [(["--seed", "-1"], "--seed must be >= 0"),
                                           (["--rl-steps", "0"], "--rl-steps must be a positive integer")])
def test_bad_arguments_are_refused_before_anything_loads(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--profile", "smoke", "--out", str(tmp_path / "x"), *argv])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("field, value", [("bon_max_n", 48), ("rl_steps", 0), ("label_noise", -0.1), ("rl_runs", ()),
                                          ("rl_runs", (("gold", 0.0),)), ("weak_rm_pairs", 5000)])
def test_config_rejects_what_the_study_cannot_run(field, value):
    import dataclasses

    with pytest.raises(ValueError):
        dataclasses.replace(OveroptConfig(), **{field: value})


def test_gold_peak_and_end_names_overoptimization_only_when_gold_falls_and_proxy_rises():
    rise_then_fall = [{"step": s, "kl": s, "proxy": p, "gold": g} for s, p, g in
                      [(0, 0.0, 0.0), (5, 1.0, 0.6), (10, 2.0, 0.9), (15, 3.0, 0.5)]]
    peak = gold_peak_and_end(rise_then_fall)
    assert (peak["peak_step"], peak["end_step"], peak["overoptimized"]) == (10, 15, True)
    still_rising = [dict(r, gold=r["proxy"]) for r in rise_then_fall]
    assert gold_peak_and_end(still_rising)["overoptimized"] is False
    proxy_fell_too = [dict(r, proxy=r["gold"]) for r in rise_then_fall]
    assert gold_peak_and_end(proxy_fell_too)["overoptimized"] is False


def test_fit_all_measures_gold_from_its_start_and_recovers_known_curves():
    import numpy as np

    from rlhf_helpers.overoptimization import bon_kl

    bon = [{"rm": "main", "n": n, "kl": bon_kl(n), "proxy": 0.0,
            "gold": 0.5 + (d := np.sqrt(bon_kl(n))) * (1.0 - 0.3 * d)} for n in (1, 2, 4, 8, 16, 64)]
    rl = [{"run": "a", "step": s, "kl": d**2, "proxy": 0.0, "gold": -1.0 + d * (0.7 - 0.2 * np.log(d) if d else 0)}
          for s, d in enumerate([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])]
    fits = fit_all(bon, rl)
    assert fits["bon"]["alpha"] == pytest.approx(1.0) and fits["bon"]["beta"] == pytest.approx(0.3)
    assert fits["rl"]["alpha"] == pytest.approx(0.7) and fits["rl"]["beta"] == pytest.approx(0.2)
    assert fits["rl"]["r2"] > 0.999 and fits["rl"]["curve"] == "PPO, a"
    assert set(fits["by_curve"]) == {"best-of-n, main RM", "PPO, a"}


def test_the_gold_rater_is_the_judge_minus_a_hinge_on_repeated_words():
    """GoldRater, checked by hand: a text at or under the allowed share of repeated words keeps the judge's score,
    one above it loses REPETITION_PENALTY per unit of share above REPEATS_ALLOWED."""
    from rlhf_helpers.reward import REPEATS_ALLOWED, REPETITION_PENALTY, GoldRater, repeated_word_share

    assert repeated_word_share("A fine film.") == 0.0
    assert repeated_word_share("great great great great") == 0.75
    assert repeated_word_share("It's it's IT") == pytest.approx(1 / 3)  # lower-cased, apostrophes kept

    class Judge:  # a stand-in sentiment judge: +1 for every text
        pipeline, device = None, torch.device("cpu")

        def __call__(self, texts):
            return torch.ones(len(texts))

    rater = GoldRater(Judge())
    texts = ["A fine film, well acted.", "great great great great"]
    expected = [1.0, 1.0 - REPETITION_PENALTY * (0.75 - REPEATS_ALLOWED)]
    assert rater(texts).tolist() == pytest.approx(expected)
    assert rater.repetition_penalty(texts).tolist() == pytest.approx([0.0, 1.0 - expected[1]])


def test_seed_bands_match_a_hand_computed_case():
    from rlhf_helpers.overoptimization import seed_bands

    def rows(golds, proxies):
        return [{"run": "main RM, β=0", "rm": "main", "beta": 0.0, "step": 10 * i, "kl": float(i), "proxy": p,
                 "gold": g, "repeated_words": 0.1 * i} for i, (g, p) in enumerate(zip(golds, proxies))]

    bands = seed_bands({0: rows([0.0, 1.0, 0.2], [0.0, 1.0, 2.0]), 1: rows([0.0, 1.2, 0.4], [0.0, 1.2, 2.2])})
    assert [b["step"] for b in bands] == [0, 10, 20]
    assert bands[1]["gold_mean"] == pytest.approx(1.1) and bands[1]["gold_std"] == pytest.approx(0.1 * 2 ** 0.5)
    assert bands[2]["repeated_words_mean"] == pytest.approx(0.2)


def test_the_shipped_seed_sweep_is_the_current_study_and_shows_the_turn_beyond_the_noise():
    """Notebook 07 draws its run against the shipped band: it must come from the study as configured now (every
    setting but the seed), over at least 3 seeds with a machine and a date, and its reading must follow from its own
    curves on the one yardstick (`paired_over_seeds`). The lesson itself: at least one PPO run's gold falls, paired per
    seed, beyond its 95 % t interval while the proxy rises on every seed, with the rater as calibrated; and what
    notebook 07 says of it: the fall is the penalties' (no run's fall is shown with the repetition penalty removed, or
    with the judge alone)."""
    from dataclasses import asdict

    from rlhf_helpers.overoptimization import SMOKE, paired_over_seeds, seed_bands
    from rlhf_helpers.results import load_result
    from rlhf_helpers.stats import seed_interval

    shipped = load_result("overoptimization", "smoke")
    assert shipped and shipped["machine"] and shipped["date"] and len(shipped["seeds"]) >= 3
    current = {k: v for k, v in asdict(SMOKE).items() if k != "seed"}
    saved = {k: (tuple(tuple(r) for r in v) if k == "rl_runs" else v) for k, v in shipped["config"].items()}
    assert saved == current, "the shipped band is from another study: rerun benchmarks/overoptimization_seeds.py"
    bands = seed_bands({int(seed): s["rl"] for seed, s in shipped["by_seed"].items()})
    assert bands == shipped["bands"]
    assert paired_over_seeds({seed: s["rl"] for seed, s in shipped["by_seed"].items()}) == shipped["reading"]
    points = {len([b for b in bands if b["run"] == run]) for run in shipped["reading"]}
    assert min(points) >= 10  # enough evaluations per run to see a peak
    assert any(r["shown"] for r in shipped["reading"].values())
    variants = shipped["rater_sensitivity"]
    for row in variants:  # the verdicts follow the course's one rule for a mean over seeds
        assert row["fall_interval"] == pytest.approx(seed_interval(row["fall_stderr"], len(shipped["seeds"])))
        assert not row["shown"] or row["fall_mean"] > row["fall_interval"]
    shown = {row["variant"] for row in variants if row["shown"]}
    assert "as calibrated" in shown, variants
    assert not shown & {"no repetition penalty", "the judge alone"}, variants


def _rows(gold, proxy):
    return [{"step": 6 * i, "gold": g, "proxy": p, "kl": float(i)} for i, (g, p) in enumerate(zip(gold, proxy))]


def test_turnover_reads_fixed_windows_by_hand():
    rows = _rows([0, 1, 3, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5, 6, 7])
    reading = turnover(rows, peak_step=18)  # index 3: window indices 2-4
    assert reading["peak_gold"] == pytest.approx((3 + 4 + 3) / 3)
    assert reading["end_gold"] == pytest.approx((2 + 1 + 0) / 3)
    assert reading["fall"] == pytest.approx(10 / 3 - 1)
    assert reading["proxy_rise"] == pytest.approx((5 + 6 + 7) / 3 - (2 + 3 + 4) / 3)
    assert turnover(rows, peak_step=0)["peak_gold"] == pytest.approx((0 + 1 + 3) / 3)  # the window stays inside
    with pytest.raises(ValueError, match="not one of this run's evaluation steps"):
        turnover(rows, peak_step=5)


def test_paired_turnover_chooses_each_seeds_peak_on_the_others():
    proxy = [0, 1, 2, 3, 4, 5, 6, 7]
    by_seed = {0: _rows([0, 1, 2, 5, 2, 1, 0, 0], proxy),   # peaks at step 18
               1: _rows([0, 1, 4, 3, 2, 1, 0, 0], proxy),   # peaks at step 12
               2: _rows([0, 3, 2, 4, 2, 1, 0, -1], proxy)}  # peaks at step 18
    reading = paired_turnover(by_seed)
    # Seed 0's peak comes from seeds 1 and 2: their mean gold [0, 2, 3, 3.5, 2, 1, 0, -0.5] peaks at step 18.
    assert reading["per_seed"][0]["peak_step"] == 18
    # Seed 1's from seeds 0 and 2: [0, 2, 2, 4.5, 2, 1, 0, -0.5] -> step 18, not its own peak (step 12).
    assert reading["per_seed"][1]["peak_step"] == 18
    falls = [reading["per_seed"][s]["fall"] for s in (0, 1, 2)]
    assert reading["fall_mean"] == pytest.approx(sum(falls) / 3)
    assert reading["fall_stderr"] == pytest.approx(torch.tensor(falls).std().item() / 3 ** 0.5)
    assert reading["proxy_rose_on_every_seed"] and reading["shown"]
    noise = {0: _rows([1.0, 1.2, 1.0, 1.0, 1.0, 0.9, 1.0, 1.0], proxy),  # ends within the noise, up and down
             1: _rows([1.0, 1.0, 1.0, 1.1, 1.0, 1.2, 1.1, 1.2], proxy),
             2: _rows([1.0, 1.1, 0.9, 1.0, 1.1, 0.9, 1.0, 1.0], proxy)}
    reading = paired_turnover(noise)
    falls = [r["fall"] for r in reading["per_seed"].values()]
    assert min(falls) < 0 < max(falls)
    assert not reading["shown"]
    with pytest.raises(ValueError, match="at least two seeds"):
        paired_turnover({0: by_seed[0]})


def test_rater_sensitivity_rescores_saved_samples_under_each_variant_by_hand():
    """Samples whose sentiment climbs while their reader nll climbs faster late in the run: the gold as calibrated
    turns over. Re-scored with half the fluency weight the fall is the hand-computed one, and without the fluency
    term (weight ×0) the gold climbs to the end."""
    from rlhf_helpers.overoptimization import rater_sensitivity
    from rlhf_helpers.reward import GoldRater

    class Judge:  # never called: the samples carry their sentiment
        pipeline = None

    rater = GoldRater(Judge(), penalty=8.0, allowed=0.15, fluency_free=3.0, fluency_weight=1.0)
    sentiment = [0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0]
    nll = [3.0, 3.0, 3.0, 3.0, 5.0, 7.0, 9.0, 11.0]

    def frame(shift):
        return pd.DataFrame({"run": "r", "step": [6 * i for i in range(8)], "proxy": [float(i) for i in range(8)],
                             "sentiment": [x + shift for x in sentiment], "repeated": 0.0, "nll": nll})

    samples = {seed: frame(0.1 * seed) for seed in (0, 1, 2)}
    variants = {"as calibrated": {}, "half": {"fluency_weight": 0.5}, "none": {"fluency_weight": 0.0}}
    rows = {r["variant"]: r for r in rater_sensitivity(samples, rater, variants)}
    gold_half = [s - 0.5 * max(0.0, n - 3.0) for s, n in zip(sentiment, nll)]  # peak at step 24 (index 3): 3.0
    peak = sum(gold_half[2:5]) / 3
    assert rows["half"]["fall_mean"] == pytest.approx(peak - sum(gold_half[5:]) / 3)
    assert rows["as calibrated"]["shown"] and rows["as calibrated"]["fall_mean"] > rows["half"]["fall_mean"]
    # Without the fluency term the gold climbs to the end: its peak is the last window, so nothing falls.
    assert rows["none"]["fall_mean"] == pytest.approx(0.0) and not rows["none"]["shown"]


def test_the_notebooks_own_run_is_read_on_its_own_and_against_the_band_by_hand():
    from rlhf_helpers.overoptimization import own_run_turnover, paired_over_seeds, runs_by_seed

    proxy = [0, 1, 2, 3, 4, 5, 6, 7]
    shipped = {0: _rows([0, 1, 2, 5, 2, 1, 0, 0], proxy), 1: _rows([0, 1, 4, 3, 2, 1, 0, 0], proxy),
               2: _rows([0, 3, 2, 4, 2, 1, 0, -1], proxy)}  # mean gold peaks at step 18
    mine = _rows([0, 1, 2, 3, 2, 1, 1, 0], proxy)
    gold_by_step = {r["step"]: [r["gold"] - 1.0, r["gold"] + 1.0] for r in mine}  # each evaluation: var 2, n 2
    reading = own_run_turnover(mine, gold_by_step, shipped)
    assert reading["peak_step"] == 18 and reading["fall"] == pytest.approx((2 + 3 + 2) / 3 - (1 + 1 + 0) / 3)
    # each evaluation's samples: variance 2 over 2 samples; a window of 3 has standard error sqrt(3) / 3
    assert reading["own_noise"] == pytest.approx(2 * (2 * (3 ** 0.5 / 3) ** 2) ** 0.5)
    assert reading["proxy_rise"] == pytest.approx(6 - 3)
    assert reading["band_fall_mean"] == pytest.approx(8 / 3) and reading["band_fall_sd"] == pytest.approx(0)
    assert reading["shown_on_its_own"] and not reading["inside_band"]  # this run fell less than every seed
    assert set(paired_over_seeds({s: [dict(r, run="r") for r in rows] for s, rows in shipped.items()})) == {"r"}
    assert runs_by_seed({0: [{"run": "a", "step": 6}, {"run": "a", "step": 0}]})["a"][0][0]["step"] == 0


def test_the_kl_penalty_is_read_at_the_same_kl_by_hand():
    from rlhf_helpers.overoptimization import kl_penalty_reading, paired_over_seeds, seed_bands

    def rows(run, golds, kls):
        return [{"run": run, "rm": "main", "beta": 0.0, "step": 6 * i, "kl": k, "proxy": float(i), "gold": g,
                 "repeated_words": 0.0} for i, (g, k) in enumerate(zip(golds, kls))]

    rl = {seed: rows("free", [0, 1, 2, 3, 2, 1, 0], [0, 2, 4, 6, 8, 10, 12])
          + rows("held", [0, 0.5, 1, 1.5, 2 + d, 2 + d, 2 + d], [0, 1, 2, 3, 4, 4, 4]) for seed, d in
          ((0, -0.1), (1, 0.0), (2, 0.1))}
    shipped = {"reading": paired_over_seeds(rl), "bands": seed_bands(rl)}
    reading = kl_penalty_reading(shipped, "free", "held")
    # the held runs end at 4 nats with gold 2 (mean over seeds); the free runs had gold 2 at 4 nats on the way up
    assert reading["free_gold_at_same_kl"] == pytest.approx(2.0)
    # the held runs' end gold over seeds: 1.9, 2.0, 2.1 (sd 0.1); the free curve's spread at 4 nats: 0; t(2) = 4.303
    assert reading["gap"] == pytest.approx(0.0) and reading["noise"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    assert reading["verdict"] == "same"
    assert reading["penalized"]["end_kl"] == pytest.approx(4.0)


def test_the_gold_breakdown_adds_up_to_the_gold_by_hand():
    from rlhf_helpers.overoptimization import RLRun, gold_breakdown
    from rlhf_helpers.reward import GoldRater

    class Judge:
        pipeline = None

    rater = GoldRater(Judge(), penalty=8.0, allowed=0.15, fluency_free=3.0, fluency_weight=0.5)
    run = RLRun(rm="main", beta=0.0)
    run.samples[0] = pd.DataFrame({"proxy": [1.0, 2.0], "sentiment": [1.0, 1.0], "repeated": [0.0, 0.0],
                                   "nll": [2.0, 4.0], "gold": [1.0, 0.5]})
    run.samples[6] = pd.DataFrame({"proxy": [3.0, 3.0], "sentiment": [2.0, 2.0], "repeated": [0.4, 0.15],
                                   "nll": [7.0, 3.0], "gold": [-2.0, 2.0]})
    table = gold_breakdown(run, rater, {"peak": 0, "end": 6})
    assert table.loc["peak", "fluency penalty"] == pytest.approx(0.25)  # 0.5 * (4 - 3) on one of two
    assert table.loc["end", "repetition penalty"] == pytest.approx(8.0 * 0.25 / 2)
    assert table.loc["end", "gold"] == pytest.approx(2.0 - 1.0 - 1.0)
    for label in ("peak", "end"):
        row = table.loc[label]
        assert row["gold"] == pytest.approx(row["sentiment"] - row["repetition penalty"] - row["fluency penalty"])


def test_the_turnover_table_names_the_seeds_verdict_and_the_runs_apart():
    from rlhf_helpers.overoptimization import RLRun, paired_over_seeds, turnover_table

    proxy = [0, 1, 2, 3, 4, 5, 6, 7]
    rl = {seed: [dict(r, run="main RM, β=0") for r in _rows(gold, proxy)] for seed, gold in
          ((0, [0, 1, 2, 5, 2, 1, 0, 0]), (1, [0, 1, 4, 3, 2, 1, 0, 0]), (2, [0, 3, 2, 4, 2, 1, 0, -1]))}
    shipped = {"by_seed": {str(s): {"rl": rows} for s, rows in rl.items()}, "reading": paired_over_seeds(rl)}
    run = RLRun(rm="main", beta=0.0)
    run.rows = [dict(r, run="main RM, β=0") for r in _rows([0, 1, 2, 3, 2, 1, 1, 0], proxy)]
    run.samples = {r["step"]: pd.DataFrame({"gold": [r["gold"] - 1.0, r["gold"] + 1.0]}) for r in run.rows}
    table = turnover_table([run], shipped)
    row = table.loc["main RM, β=0"]
    assert row["peak step"] == 18 and row["seeds: shown"] == shipped["reading"]["main RM, β=0"]["shown"]
    assert row["this run: gold fall ± 2 SE"].startswith("+1.67") and bool(row["this run: shown"])
    assert not row["this run inside the seeds' band"]


def test_best_of_n_is_read_for_a_turnover():
    from rlhf_helpers.overoptimization import read_best_of_n

    rising = [{"rm": rm, "n": n, "kl": kl, "proxy": 0.0, "gold": g}
              for rm in ("main", "weak") for n, kl, g in [(1, 0.0, -0.1), (2, 0.19, 0.05), (4, 0.64, 0.2)]]
    text = read_best_of_n(rising)
    assert text.startswith("Best-of-n, up to 0.6 nats: main: gold -0.10 at n = 1 -> +0.20 at n = 4, highest at")
    assert "Neither turns over" in text
    turned = [dict(r, gold=0.0) if (r["rm"], r["n"]) == ("weak", 4) else r for r in rising]
    text = read_best_of_n(turned)
    assert "weak: gold -0.10 at n = 1 -> +0.00 at n = 4, highest at n = 2" in text and "turns down" in text


def test_a_fall_difference_is_paired_by_seed_and_the_rater_variants_are_counted():
    import statistics

    from rlhf_helpers.overoptimization import paired_fall_difference, read_rater_sensitivity

    reading = {"weak": {"per_seed": {"0": {"fall": 0.7}, "1": {"fall": 1.3}, "2": {"fall": 1.7}}},
               "main": {"per_seed": {"0": {"fall": 0.2}, "1": {"fall": 0.6}, "2": {"fall": 0.0}}}}
    diff = paired_fall_difference(reading, "weak", "main")
    assert diff["per_seed"] == pytest.approx([0.5, 0.7, 1.7]) and diff["mean"] == pytest.approx(2.9 / 3)
    stderr = statistics.stdev([0.5, 0.7, 1.7]) / 3 ** 0.5
    assert diff["stderr"] == pytest.approx(stderr) and diff["interval"] == pytest.approx(4.303 * stderr)
    assert not diff["beyond"]  # +0.97 is 2.6 standard errors: beyond 2 SE, within t(2)'s 4.3
    steady = {"weak": {"per_seed": {"0": {"fall": 0.9}, "1": {"fall": 1.4}, "2": {"fall": 0.85}}},
              "main": reading["main"]}
    assert paired_fall_difference(steady, "weak", "main")["beyond"]  # differences 0.7, 0.8, 0.85: 18 SE
    rows = [{"variant": v, "run": "weak", "fall_mean": f, "fall_stderr": 0.1, "fall_interval": 0.43, "shown": s}
            for v, f, s in [("as calibrated", 1.2, True), ("repetition penalty ×0.5", 0.5, True),
                            ("the judge alone", -0.01, False)]]
    assert read_rater_sensitivity(rows, ("weak",)) == (
        "Re-scored with the rater's constants varied one at a time and each penalty removed, the fall is shown beyond "
        "the noise for weak in 2 of 3 (held: as calibrated, repetition penalty ×0.5; not: the judge alone). With the "
        "judge alone, no penalty, the "
        "fall is weak -0.01 ± 0.43: most of each fall is what the penalties charge (repetition, unreadable text), not "
        "the judge's sentiment.")


def test_seed_interval_is_students_t_over_the_seeds():
    from rlhf_helpers.stats import seed_interval

    assert seed_interval(1.0, 3) == pytest.approx(4.303)  # two degrees of freedom
    assert seed_interval(0.5, 2) == pytest.approx(0.5 * 12.706)
    assert seed_interval(1.0, 11) == pytest.approx(2.228) and seed_interval(1.0, 500) == pytest.approx(1.96)
    with pytest.raises(ValueError, match="at least two seeds"):
        seed_interval(1.0, 1)


def test_a_fit_is_drawn_only_where_it_puts_the_peak_where_the_gold_peaks():
    """An RL curve that follows Gao et al.'s form d(α − β log d) exactly is fitted with its peak next to the measured
    one; a curve that rises slowly to d = 3 and then falls steadily (the shape of the weak run in notebook 07) fits
    with a good r² (0.87) and its peak at d = 1.15, two evaluations early."""
    import math

    from rlhf_helpers.overoptimization import fit_intervals, fitted_peak, measured_peak_window

    ds = [0.0] + [0.5 * i for i in range(1, 12)]
    def rl(golds):
        return [{"run": "r", "step": 6 * i, "kl": d * d, "proxy": float(i), "gold": g}
                for i, (d, g) in enumerate(zip(ds, golds))]
    gao = [0.0] + [d * (1.0 - 0.5 * math.log(d)) for d in ds[1:]]  # peaks at d* = exp(1/0.5 - 1) = e
    bon = [{"rm": "main", "n": 2 ** i, "kl": 0.1 * i, "proxy": 0.0, "gold": 0.0} for i in range(4)]
    fit = fit_intervals({s: {"bon": bon, "rl": rl(gao)} for s in (0, 1, 2)})["PPO, r"]
    assert fit["fitted_peak_min"] == pytest.approx(math.e, rel=1e-3) and fit["meaningful"], fit
    assert measured_peak_window(rl(gao)) == (2.0, 2.5, 3.0)  # sampled, the gold is highest at 2.5 (e lies in 2.5-3.0)
    late = [0.1 * d if d <= 3.0 else 0.3 - 0.5 * (d - 3.0) for d in ds]
    fit = fit_intervals({s: {"bon": bon, "rl": rl(late)} for s in (0, 1, 2)})["PPO, r"]
    assert fit["r2_min"] > 0.8 and fit["fitted_peak_max"] < 2.5
    assert not fit["meaningful"] and fit["peak_placed"] == 0 and "puts the peak" in fit["why_not"], fit
    assert fitted_peak({"alpha": 1.0, "beta": -0.1}, "rl") == math.inf
    assert fitted_peak({"alpha": 1.0, "beta": 0.25}, "bon") == pytest.approx(2.0)


def test_the_defences_are_read_at_the_same_kl_and_paired_by_seed():
    from rlhf_helpers.overoptimization import defences_table, paired_over_seeds, read_defences, seed_bands

    def rows(run, golds, kls):
        return [{"run": run, "rm": "main", "beta": 0.0, "step": 6 * i, "kl": k, "proxy": float(i), "gold": g,
                 "repeated_words": 0.0} for i, (g, k) in enumerate(zip(golds, kls))]

    rl = {seed: rows("free", [0, 1, 2, 3, 2, 1, 0], [0, 2, 4, 6, 8, 10, 12])
          + rows("held", [0, 0.5, 1, 1.5, 2 + d, 2 + d, 2 + d], [0, 1, 2, 3, 4, 4, 4])
          + rows("weak", [0, 1, 2, 3, 1 + d, 0, -1], [0, 2, 4, 6, 8, 10, 12])
          + rows("rising", [0, 1, 2, 3, 4, 5, 6 + d], [0, 1, 2, 3, 4, 5, 6]) for seed, d in
          ((0, -0.1), (1, 0.0), (2, 0.1))}
    shipped = {"seeds": [0, 1, 2], "reading": paired_over_seeds(rl), "bands": seed_bands(rl),
               "by_seed": {str(seed): {"rl": rows_} for seed, rows_ in rl.items()}}
    table = defences_table(shipped)
    assert table.loc["free", "gold at the end"] == pytest.approx(1.0)  # last three evaluations: 2, 1, 0 -> 1
    assert table.loc["held", "KL at the end"] == pytest.approx(4.0) and not table.loc["held", "fall shown"]
    assert table.loc["rising", "gold fall ± 95 %"] == "none: highest at the end"  # not a measured zero
    assert table.loc["weak", "gold fall ± 95 %"].startswith("+")
    lines = read_defences(shipped, "free", "held", "weak")
    assert lines[0].startswith("KL penalty: the penalized runs end at 4.0 nats with +0.00 ± 0.25") and \
        "cannot tell apart" in lines[0]
    # weak falls 3 - (0 + -1 + 1 + d)/3 ... per seed; minus free's fall 2.0, paired: the same on every seed but d/3
    assert "weak model's fall minus the main one's" in lines[1] and len(lines) == 2
