"""The benchmark script stays runnable and reports what the README quotes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo"])  # PPO's identical configuration runs in the GPU check's dry run
def test_benchmark_runs_on_smoke_models(algo):
    out = subprocess.run([sys.executable, str(SCRIPT), "--models", "smoke", "--algo", algo, "--steps", "1",
                          "--batch-size", "16", "--mini-batch-size", "8", "--epochs", "2"],
                         capture_output=True, text=True, timeout=120)  # ~5 s of work, world prebuilt
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["algo"] == algo and result["samples_per_second"] > 0 and result["peak_rss_mb"] > 0
    assert result["phase_seconds"]["generate"] > 0


def test_hero_figure_is_drawn_from_a_runs_own_files(tmp_path):
    import pandas as pd

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import hero
    finally:
        sys.path.remove(str(SCRIPT.parent))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"episodes": 64 * i, "reward_mean": 0.1 * i}) + "\n"
                                               for i in range(1, 11)))
    (run / "summary.json").write_text(json.dumps({"profile": "smoke", "seed": 0,
                                                  "before": {"mean_reward": -0.1, "positive_rate": 0.3},
                                                  "after": {"mean_reward": 0.9, "positive_rate": 0.9}}))
    pd.DataFrame({"prompt": ["A", "B", "C"], "response_before": ["bad", "meh", "ok"], "reward_before": [-1, 0, 1],
                  "response_after": ["good", "great", "fine"], "reward_after": [1, 2, 1]}).to_csv(run / "samples.csv")
    facts = hero.draw(run, tmp_path / "hero.png", n_samples=2)
    assert (tmp_path / "hero.png").stat().st_size > 10_000
    assert facts["episodes"] == 640 and facts["samples"] == 2 and facts["after"]["positive_rate"] == 0.9
    refused = subprocess.run([sys.executable, str(SCRIPT.parent / "hero.py"), str(tmp_path), str(tmp_path / "x.png")],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no finished run" in refused.stderr


def test_the_shipped_kl_control_results_match_the_benchmark_and_name_their_machine():
    """What notebook 05 draws is what benchmarks/kl_control.py measures now: every variant, its settings, a machine."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import kl_control
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from rlhf_helpers.results import load_result

    shipped = load_result("kl_control", "smoke")
    assert shipped and shipped["machine"] and shipped["date"]
    assert [p["variant"] for p in shipped["points"]] == list(kl_control.VARIANTS)
    for point in shipped["points"]:
        for name, value in kl_control.VARIANTS[point["variant"]].items():
            assert point[name] == value
        assert {"kl", "mean_reward", "positive_rate", "ref_perplexity"} <= set(point["after"])
        # notebook 05 shows each run's repetition and its first held-out samples beside the learner's run
        assert 0 < point["repetition"]["distinct_token_share"] <= 1 and point["repetition"]["top_words"]
        assert len(point["samples"]) == kl_control.SHOWN
        assert {"prompt", "response", "reward"} <= set(point["samples"][0])
        # the β trajectory's low point, which notebook 05 reads for the fast controller
        assert point["beta_min"] <= min(point["beta_start"], point["beta_end"]) and point["beta_min_step"] >= 1
        assert point["train_kl_max"] >= point["train_kl_last5"]


def test_the_shipped_long_sft_run_is_the_notebooks_recipe_and_names_its_machine():
    """What notebook 02 draws its own run against is benchmarks/sft_longer.py run on the notebook's settings: only the
    step count, the number of demonstrations and the evaluation interval differ."""
    import dataclasses

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import sft_longer
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from rlhf_helpers import get_profile
    from rlhf_helpers.results import load_result
    from rlhf_helpers.sft import settings_for

    shipped = load_result("sft_longer", "smoke")
    assert shipped and shipped["machine"] and shipped["date"] and shipped["profile"] == "smoke"
    recipe = dataclasses.asdict(settings_for(get_profile("smoke")))
    differ = {k for k in recipe if shipped["settings"][k] != recipe[k]}
    assert differ == {"steps", "n_train", "eval_every"} and shipped["settings"]["n_train"] == sft_longer.N_TRAIN
    assert [c["step"] for c in shipped["checkpoints"]] == list(sft_longer.CHECKPOINTS)
    assert shipped["settings"]["steps"] == sft_longer.CHECKPOINTS[-1]
    curve = {row["step"]: row["heldout_loss"] for row in shipped["heldout_curve"]}
    for point in shipped["checkpoints"]:  # each evaluation's held-out loss is the curve's at that step
        assert point["held-out loss (nats/token)"] == curve[point["step"]]
        assert 0 <= point["unseen-word rate"] <= 1 and point["unseen-word rate SE"] > 0 and len(point["samples"]) == 6
    assert [c["seconds"] for c in shipped["checkpoints"]] == sorted(c["seconds"] for c in shipped["checkpoints"])


@pytest.mark.slow  # loads IMDB's vocabulary and evaluates twice (about 20 s)
def test_the_long_sft_benchmark_runs_at_a_tiny_size_and_refuses_a_finished_folder(tmp_path, capsys):
    import json

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import sft_longer
    finally:
        sys.path.remove(str(SCRIPT.parent))
    result = sft_longer.main(["--out", str(tmp_path), "--steps", "2", "--n-train", "64"])
    assert [c["step"] for c in result["checkpoints"]] == [0, 2]  # the start and the last step, whatever the list
    first, last = (c["held-out loss (nats/token)"] for c in result["checkpoints"])
    assert last < first
    assert json.loads((tmp_path / "sft_longer.json").read_text())["settings"]["steps"] == 2
    with pytest.raises(SystemExit):
        sft_longer.main(["--out", str(tmp_path), "--steps", "2", "--n-train", "64"])
    assert "holds a finished benchmark" in capsys.readouterr().err
