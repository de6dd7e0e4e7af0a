"""The over-optimization study: its command writes what issue 11 lists, refuses to overwrite, and rejects bad input."""

import json

import pytest

from rlhf_helpers.overoptimization import OveroptConfig, fit_all, gold_peak_and_end, main, run_study

TINY = OveroptConfig(n_pairs=128, n_heldout_pairs=32, rm_epochs=1, weak_rm_pairs=64, weak_rm_epochs=1, bon_prompts=8,
                     bon_max_n=8, rl_runs=(("main", 0.0), ("weak", 0.06)), rl_steps=2, rl_eval_every=1,
                     n_eval_prompts=16)


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
