"""What a run leaves behind: the saved policy loads with plain transformers and reproduces the run's numbers,
`python -m rlhf_helpers.compare` compares saved policies on the same prompts, and a tracker's events read back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["--algo", "ppo", "--profile", "smoke", "--steps", "3", "--batch-size", "16", "--mini-batch-size", "8",
       "--no-progress", "--report-to", "tensorboard", "--eval-every", "2"]


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "ppo"
    done = subprocess.run([sys.executable, "-m", "rlhf_helpers.train", *RUN, "--out", str(out)], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_the_saved_policy_is_a_plain_transformers_folder(finished_run):
    policy = finished_run / "policy"
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["policy"] == "policy"
    assert {"config.json", "model.safetensors", "tokenizer.json", "value_head.safetensors", "README.md"} <= {
        p.name for p in policy.iterdir()}
    assert not [p for p in finished_run.iterdir() if ".tmp-" in p.name]
    card = (policy / "README.md").read_text()
    assert "python -m rlhf_helpers.train --algo ppo" in card and f"{summary['after']['mean_reward']:.4g}" in card
    # A fresh process with no course code: transformers' own loaders and pipeline.
    code = ("import sys; from transformers import AutoModelForCausalLM, pipeline\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
            "g = pipeline('text-generation', model=sys.argv[1])\n"
            "print(type(m).__name__, len(g('This movie', max_new_tokens=4, do_sample=False)[0]['generated_text']))")
    loaded = subprocess.run([sys.executable, "-c", code, str(policy)], capture_output=True, text=True, env=_env(),
                            timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[0] == "GPT2LMHeadModel"


@pytest.mark.slow
def test_evaluate_reproduces_two_saved_runs_and_the_initial_policy_in_one_command(finished_run, reference_run,
                                                                                    tmp_path):
    """Two saved runs (3 and 6 PPO steps) and the initial policy, on the same prompts in one command: each one's
    numbers equal, to the last bit, what its own run measured when it ended (and the initial policy's, "before")."""
    from rlhf_helpers import get_profile
    from rlhf_helpers.models import model_ids

    runs = [finished_run, reference_run[0]]
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    initial = model_ids(get_profile("smoke")).policy
    report = tmp_path / "compare.json"
    done = subprocess.run([sys.executable, "-m", "rlhf_helpers.compare", "--profile", "smoke",
                           *[a for run in runs for a in ("--policy", str(run / "policy"))], "--policy", initial,
                           "--out", str(report)], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    *trained, start = result["policies"]
    for row, summary in zip(trained, summaries):
        for key in ("mean_reward", "positive_rate", "kl", "ref_perplexity", "n_prompts"):
            assert row[key] == summary["after"][key], key  # exactly: same weights, prompts and sampling seed
            assert start[key] == summary["before"][key], key
    assert trained[0]["mean_reward"] != trained[1]["mean_reward"], "two different runs, told apart"
    assert start["kl"] == 0.0 and all(row["kl"] > 0 for row in trained)
    assert {"gold", "distinct_token_share", "response_tokens", "samples"} <= set(trained[0])
    assert 0 < trained[0]["distinct_token_share"] <= 1 and len(trained[0]["samples"]) == 8
    assert [row["samples"][0]["prompt"] for row in result["policies"]] == [start["samples"][0]["prompt"]] * 3
    assert all(str(run / "policy") in done.stdout for run in runs)  # the table names each policy
    again = subprocess.run([sys.executable, "-m", "rlhf_helpers.compare", "--profile", "smoke", "--policy",
                            str(finished_run / "policy"), "--out", str(report)], capture_output=True, text=True,
                           env=_env(), timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr  # a finished report is never overwritten


def test_evaluate_names_a_policy_that_is_not_one(fast_world, tmp_path, capsys):
    from rlhf_helpers.compare import main

    with pytest.raises(SystemExit) as refused:
        main(["--profile", "smoke", "--policy", str(fast_world.classifier)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "a sequence classifier; the policy must be a causal language model" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as refused:
        main(["--profile", "smoke", "--policy", str(tmp_path / "no" / "such" / "run")])
    assert refused.value.code == 2 and "is not a folder" in capsys.readouterr().err


def test_distinct_token_share():
    from rlhf_helpers.evaluation import distinct_token_share

    assert distinct_token_share([[1, 2, 3], [5, 5, 5, 5]]) == pytest.approx((1 + 0.25) / 2)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_repetition_reading_counts_distinct_tokens_and_words():
    from rlhf_helpers.evaluation import repetition_reading

    class Tokens:  # one token per character: the shares are easy to count by hand
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    reading = repetition_reading(["great great", "a film"], Tokens(), top=2)
    assert reading["distinct_token_share"] == pytest.approx((6 / 11 + 6 / 6) / 2)  # g r e a t and the space, of 11
    assert reading["top_words"] == [("great", 2), ("a", 1)] and reading["responses"] == 2


def test_side_by_side_puts_two_runs_on_the_same_prompts_and_refuses_other_prompts():
    import pandas as pd

    from rlhf_helpers.evaluation import side_by_side

    mine = pd.DataFrame({"prompt": ["I", "The", "It"], "response": [" liked it", " best", " was"],
                         "reward": [1.234, 2.0, -0.5]})
    other = [{"prompt": "I", "response": " great great", "reward": 5.0},
             {"prompt": "The", "response": " great", "reward": 4.0}]
    table = side_by_side({"this run": mine, "no KL penalty": other}, n=2)
    assert table.columns.tolist() == ["prompt", "this run", "reward (this run)", "no KL penalty",
                                      "reward (no KL penalty)"]
    assert table["this run"].tolist() == [" liked it", " best"] and table["reward (this run)"].tolist() == [1.23, 2.0]
    with pytest.raises(ValueError, match="other prompts"):
        side_by_side({"this run": mine, "shifted": mine.iloc[1:]}, n=2)


@pytest.mark.slow
def test_the_hand_built_loop_logs_its_metrics_to_tensorboard(finished_run):
    """--report-to tensorboard: every metrics.jsonl field per step as train/<name>, held-out evaluations as
    eval/<name>, read back with TensorBoard's own reader."""
    scalars = _scalars(finished_run / "tensorboard")
    metrics = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "kl", "kl_coef", "policy_loss", "value_loss", "clipfrac", "explained_variance"):
        logged = scalars[f"train/{key}"]
        assert [step for step, _ in logged] == [m["step"] for m in metrics], key
        assert [value for _, value in logged] == pytest.approx([m[key] for m in metrics], rel=1e-6), key
    evals = [json.loads(line) for line in (finished_run / "eval.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars["eval/mean_reward"]] == [e["round"] for e in evals[:-1]]  # 0 and 2
    assert scalars["eval/mean_reward"][0][1] == pytest.approx(evals[0]["mean_reward"], rel=1e-6)


def test_a_tracker_that_is_not_installed_is_refused_before_loading(monkeypatch, tmp_path, capsys):
    import importlib.util

    from rlhf_helpers import tracking, train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SystemExit) as refused:
        train.main(["--algo", "ppo", "--profile", "smoke", "--out", str(tmp_path / "run"), "--report-to", "wandb"])
    assert refused.value.code == 2
    assert "--report-to wandb needs the wandb package" in capsys.readouterr().err
    with pytest.raises(tracking.SettingError, match="must be one of"):
        tracking.check_tracker("mlflow")
