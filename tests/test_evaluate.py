"""What a run leaves behind: the saved policy loads with plain transformers and reproduces the run's numbers, and
`python -m rlhf_helpers.evaluate` compares saved policies on the same prompts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["--algo", "ppo", "--profile", "smoke", "--steps", "3", "--batch-size", "16", "--mini-batch-size", "8",
       "--no-progress"]


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "ppo"
    done = subprocess.run([sys.executable, "-m", "rlhf_helpers.train", *RUN, "--out", str(out)], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


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


def test_evaluate_reproduces_the_run_and_compares_two_policies_on_the_same_prompts(finished_run, tmp_path):
    from rlhf_helpers import get_profile
    from rlhf_helpers.models import model_ids

    summary = json.loads((finished_run / "summary.json").read_text())
    initial = model_ids(get_profile("smoke"))[0]
    report = tmp_path / "compare.json"
    done = subprocess.run([sys.executable, "-m", "rlhf_helpers.evaluate", "--profile", "smoke", "--policy",
                           str(finished_run / "policy"), "--policy", initial, "--out", str(report)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    trained, start = result["policies"]
    for key in ("mean_reward", "positive_rate", "kl", "ref_perplexity", "n_prompts"):
        assert trained[key] == summary["after"][key], key  # exactly: same weights, prompts and sampling seed
        assert start[key] == summary["before"][key], key
    assert start["kl"] == 0.0 and trained["kl"] > 0
    assert {"gold", "distinct_token_share", "response_tokens", "samples"} <= set(trained)
    assert 0 < trained["distinct_token_share"] <= 1 and len(trained["samples"]) == 8
    assert str(finished_run / "policy") in done.stdout  # the table names each policy
    again = subprocess.run([sys.executable, "-m", "rlhf_helpers.evaluate", "--profile", "smoke", "--policy",
                            str(finished_run / "policy"), "--out", str(report)], capture_output=True, text=True,
                           env=_env(), timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr  # a finished report is never overwritten


def test_evaluate_names_a_policy_that_is_not_one(fast_world, tmp_path, capsys):
    from rlhf_helpers.evaluate import main

    with pytest.raises(SystemExit) as refused:
        main(["--profile", "smoke", "--policy", str(fast_world.classifier)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "a sequence classifier; the policy must be a causal language model" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as refused:
        main(["--profile", "smoke", "--policy", str(tmp_path / "no" / "such" / "run")])
    assert refused.value.code == 2 and "is not a folder" in capsys.readouterr().err


def test_distinct_token_share():
    from rlhf_helpers.evaluate import distinct_token_share

    assert distinct_token_share([[1, 2, 3], [5, 5, 5, 5]]) == pytest.approx((1 + 0.25) / 2)
