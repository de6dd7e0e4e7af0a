"""The headless runner: argument errors before any model loads, determinism, kill-and-resume, the smoke bar."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_helpers import models, train
from rlhf_helpers.profiles import get_profile

SMALL = ["--algo", "ppo", "--profile", "smoke", "--steps", "6", "--batch-size", "16", "--mini-batch-size", "8",
         "--no-progress"]


@pytest.fixture
def no_model_loads(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "model_ids", forbidden)


@pytest.mark.parametrize("argv, message", [
    (["--algo", "dpo"], "invalid choice: 'dpo'"),
    (["--algo", "ppo", "--profile", "tpu"], "invalid choice: 'tpu'"),
    (["--algo", "ppo", "--steps", "0"], "--steps must be positive"),
    (["--algo", "ppo", "--steps", "-3"], "--steps must be positive"),
    (["--algo", "ppo", "--batch-size", "10", "--mini-batch-size", "4"], "not divisible"),
    (["--algo", "grpo", "--batch-size", "48", "--mini-batch-size", "12"], "multiple of it"),
    (["--algo", "rloo", "--save-every", "5"], "ppo only"),
])
def test_bad_arguments_fail_before_loading(argv, message, tmp_path, capsys, no_model_loads):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "--out", str(tmp_path / "run"), "--profile", "smoke"]
                   if "--profile" not in argv else [*argv, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_existing_run_needs_resume(tmp_path, capsys, no_model_loads):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit):
        train.main(["--algo", "ppo", "--profile", "smoke", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err


def _run(out: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "rlhf_helpers.train", *SMALL, "--out", str(out), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if wait:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out / "summary.json").read_text())
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "train_seconds")}


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time_") and k != "train_seconds"} for row in rows]


def test_killed_run_resumes_to_the_same_result_and_seeds_repeat(tmp_path):
    reference = _run(tmp_path / "a")
    assert _comparable(_run(tmp_path / "b")) == _comparable(reference), "same seed, same summary"

    proc = _run(tmp_path / "c", "--save-every", "2", wait=False)
    deadline = time.time() + 300
    while not (tmp_path / "c" / "checkpoints" / "step-000002" / "state.json").exists():
        assert proc.poll() is None, "the run ended before writing its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "c" / "summary.json").exists(), "the process was killed before finishing"
    resumed = _run(tmp_path / "c", "--save-every", "2", "--resume")
    assert _comparable(resumed) == _comparable(reference)
    assert _metrics(tmp_path / "c") == _metrics(tmp_path / "a")
    for name in ("samples.csv", "curves.png"):
        assert (tmp_path / "c" / name).stat().st_size > 0


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_smoke_bar(tmp_path, algo):
    """The full smoke profile: <= 3 min on 2 cores, positive rate >= 0.8 and >= before + 0.3, KL reported."""
    start = time.perf_counter()
    summary = train.main(["--algo", algo, "--profile", "smoke", "--out", str(tmp_path), "--no-progress"])
    wall = time.perf_counter() - start
    before, after = summary["before"], summary["after"]
    assert after["positive_rate"] >= 0.8, summary
    # The bar (+0.3) is for real IMDB, as CI runs it (baseline 0.42). On the shipped template fixture the untrained
    # policy already scores 0.71, so +0.3 would exceed 1.0: there, close at least half of the remaining headroom.
    gain = 0.3 if os.environ.get("RLHF_IMDB_DIR") else min(0.3, 0.5 * (1 - before["positive_rate"]))
    assert after["positive_rate"] >= before["positive_rate"] + gain, summary
    assert after["kl"] > 0 and before["kl"] == pytest.approx(0, abs=1e-6)
    assert wall <= 180, f"smoke PPO took {wall:.0f} s"
    assert set(summary) >= {"before", "after", "episodes", "wall_seconds"}
    assert set(before) >= {"mean_reward", "positive_rate", "kl", "ref_perplexity"} and set(after) == set(before)
    assert summary["episodes"] == get_profile("smoke").batch_size * get_profile("smoke").total_steps
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["steps"]
    keys = ["reward_mean", "reward_std", "clipfrac", "entropy", "response_length"]
    if algo == "ppo":
        keys += ["kl", "kl_coef", "policy_loss", "value_loss", "approxkl", "explained_variance", "time_generate",
                 "time_score", "time_forward", "time_update"]
    for key in keys:
        assert key in json.loads(lines[-1]), key
    for name in ("samples.csv", "curves.png", "eval.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
