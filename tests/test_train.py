"""The headless runner: argument errors before any model loads, determinism, kill-and-resume, the smoke bar."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_helpers import models, train, trainers
from rlhf_helpers.profiles import get_profile

SMALL = ["--algo", "ppo", "--profile", "smoke", "--steps", "6", "--batch-size", "16", "--mini-batch-size", "8",
         "--no-progress"]


@pytest.fixture
def no_model_loads(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    for module in (models, trainers):  # every module that looks the models up
        monkeypatch.setattr(module, "model_ids", forbidden)


@pytest.mark.parametrize("argv, message", [
    (["--algo", "kto"], "invalid choice: 'kto'"),
    (["--algo", "dpo", "--mini-batch-size", "7", "--batch-size", "63"], "must be even"),
    (["--algo", "ppo", "--profile", "tpu"], "invalid choice: 'tpu'"),
    (["--algo", "ppo", "--steps", "0"], "--steps: must be a positive integer"),
    (["--algo", "ppo", "--steps", "-3"], "--steps: must be a positive integer"),
    (["--algo", "ppo", "--batch-size", "10", "--mini-batch-size", "4"], "not divisible"),
    (["--algo", "grpo", "--batch-size", "48", "--mini-batch-size", "12"], "multiple of it"),
    (["--algo", "rloo", "--save-every", "5"], "ppo only"),
    (["--algo", "ppo", "--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
    (["--algo", "grpo", "--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
    (["--algo", "ppo", "--mini-batch-size", "0"], "--mini-batch-size: must be a positive integer"),
    (["--algo", "ppo", "--seed", "-1"], "--seed: must be in [0, 2**32)"),
    (["--algo", "ppo", "--eval-every", "-2"], "--eval-every: must be 0 or a positive integer"),
])
def test_bad_arguments_fail_before_loading(argv, message, tmp_path, capsys, no_model_loads):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "--out", str(tmp_path / "run"), "--profile", "smoke"]
                   if "--profile" not in argv else [*argv, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["metrics.jsonl", "samples.csv", "eval.jsonl", "curves.png"])
def test_existing_run_needs_resume(tmp_path, capsys, no_model_loads, name):
    (tmp_path / name).write_text("{}\n")
    with pytest.raises(SystemExit):
        train.main(["--algo", "ppo", "--profile", "smoke", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (tmp_path / name).read_text() == "{}\n"


def test_unfinished_trl_run_says_it_cannot_resume(tmp_path, capsys, no_model_loads):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit):
        train.main(["--algo", "grpo", "--profile", "smoke", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "TRL runs cannot resume" in err and "another --out" in err


def test_run_function_refuses_bad_sizes_before_loading(tmp_path, no_model_loads):
    with pytest.raises(ValueError, match="--batch-size must be a positive integer"):
        train.run(train.RunSpec("grpo", batch_size=0), get_profile("smoke"), tmp_path)
    with pytest.raises(ValueError, match="--seed"):
        train.run(train.RunSpec("ppo", seed=-1), get_profile("smoke"), tmp_path)


def test_trl_config_keeps_an_explicit_zero(no_model_loads):
    from rlhf_helpers.trl_runs import trl_config

    with pytest.raises(ValueError, match="must be positive"):
        trl_config("grpo", get_profile("smoke"), "unused", batch_size=0)


def _run(out: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "rlhf_helpers.train", *SMALL, "--out", str(out), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if wait:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)  # ~10 s of work
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out / "summary.json").read_text())
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "train_seconds")}


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time_") and k != "train_seconds"} for row in rows]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_and_seeds_repeat(tmp_path, reference_run):
    assert SMALL == reference_run[2]
    reference_dir, reference, _ = reference_run
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
    assert f'"pid": {proc.pid}' in (tmp_path / "c" / ".lock").read_text(), "the killed run's lock file is left ..."
    resumed = _run(tmp_path / "c", "--save-every", "2", "--resume")  # ... and blocks nobody
    assert _comparable(resumed) == _comparable(reference)
    assert _metrics(tmp_path / "c") == _metrics(reference_dir)
    for name in ("samples.csv", "curves.png"):
        assert (tmp_path / "c" / name).stat().st_size > 0


def _check_run_files(out: Path, summary: dict, algo: str, batch_size: int, steps: int) -> None:
    before, after = summary["before"], summary["after"]
    assert after["kl"] > 0 and before["kl"] == pytest.approx(0, abs=1e-6)
    assert set(summary) >= {"before", "after", "episodes", "wall_seconds"}
    assert set(before) >= {"mean_reward", "positive_rate", "kl", "ref_perplexity"} and set(after) == set(before)
    # DPO samples its pairs up front: dpo.samples_per_prompt completions for each of steps × batch / 2 pairs.
    per_episode = get_profile("smoke").dpo.samples_per_prompt / 2 if algo == "dpo" else 1
    assert summary["episodes"] == batch_size * steps * per_episode
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["steps"] == steps
    keys = ["reward_mean", "reward_std", "clipfrac", "entropy", "response_length"]
    if algo == "dpo":
        keys = ["loss", "reward_chosen", "reward_rejected", "reward_accuracy", "reward_margin"]
    if algo == "ppo":
        keys += ["kl", "kl_coef", "policy_loss", "value_loss", "approxkl", "explained_variance", "time_generate",
                 "time_score", "time_forward", "time_update"]
    for key in keys:
        assert key in json.loads(lines[-1]), key
    for name in ("samples.csv", "curves.png", "eval.jsonl"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "grpo", "dpo"])
def test_every_algorithm_writes_a_complete_run(tmp_path, algo, reference_run):
    """What a run writes and logs, per algorithm, on short runs. Whether the full smoke runs *train* is the lesson
    check of the notebooks that run them (05: PPO, 06: PPO/GRPO/RLOO, 08: DPO; rlhf_helpers.claims): one training
    run per suite, not a second copy here."""
    if algo == "ppo":
        out, summary, args = reference_run
    else:
        out = tmp_path / "run"
        summary = train.main(["--algo", algo, "--profile", "smoke", "--steps", "2", "--batch-size", "16",
                              "--mini-batch-size", "8", "--out", str(out), "--no-progress"])
    _check_run_files(out, summary, algo, batch_size=16, steps=summary["steps"])
    info = json.loads((out / "run.json").read_text())
    if algo == "grpo":  # the trainer's derived settings are recorded too, as the trainer actually used them
        used = info["trainer"]["GRPOConfig"]
        assert used["steps_per_generation"] * used["per_device_train_batch_size"] == 16
        assert used["max_steps"] == 2 * used["steps_per_generation"] * used["num_iterations"]
        assert {"num_generations", "logging_steps", "beta", "learning_rate"} <= set(used)
    elif algo == "dpo":
        assert info["trainer"]["DPOConfig"]["per_device_train_batch_size"] == 4  # 8 completions = 4 pairs
    else:
        assert "trainer" not in info  # the hand-built loop's settings are all in "config"


def _files(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten(tmp_path):
    """Same command again, with or without --resume: the finished run is left byte for byte as it was."""
    out = tmp_path / "run"
    _run(out, "--steps", "3")
    finished = _files(out)
    again = subprocess.run([sys.executable, "-m", "rlhf_helpers.train", *SMALL, "--steps", "3", "--out", str(out),
                            "--resume"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished run" in again.stdout and "nothing was changed" in again.stdout
    assert "starting from scratch" not in again.stdout
    refused = subprocess.run([sys.executable, "-m", "rlhf_helpers.train", *SMALL, "--steps", "3", "--out",
                              str(out)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "finished run" in refused.stderr
    assert _files(out) == finished


@pytest.mark.slow
def test_a_failed_start_does_not_block_its_retry(tmp_path, monkeypatch):
    """A start that fails while loading (here: a damaged data folder) leaves no marker; the fixed retry runs."""
    out = tmp_path / "run"
    ids = models.model_ids(get_profile("smoke"))
    broken = tmp_path / "imdb"
    broken.mkdir()
    monkeypatch.setenv("RLHF_IMDB_DIR", str(broken))  # no parquet files: fails while loading the data
    monkeypatch.setattr(models, "model_ids", lambda profile: ids)
    with pytest.raises(FileNotFoundError):
        train.run(train.RunSpec("ppo", steps=1), get_profile("smoke"), out)
    assert train.run_status(out) in ("missing", "empty")
    # The corrected command is not refused as "already holds a run".
    train.parse_args([*SMALL, "--out", str(out)])


def test_an_empty_start_is_recognised(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    assert train.run_status(tmp_path) == "empty"
    train.parse_args([*SMALL, "--out", str(tmp_path)])  # no error


def test_resume_names_the_field_that_differs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    profile = get_profile("smoke")
    import dataclasses

    saved = {"algo": "ppo", "profile": "smoke", "config": dataclasses.asdict(profile.ppo),
             "data": "/elsewhere/imdb", "models": {"policy": "p", "reward": "r"}}
    (out / "run.json").write_text(json.dumps(saved))
    (out / "metrics.jsonl").write_text("{}\n")
    for module in (models, trainers):
        monkeypatch.setattr(module, "model_ids", lambda profile: models.ModelIds("p", "r"))
    with pytest.raises(train.RunError) as info:
        train.run(train.RunSpec("grpo", resume=True), profile, out)
    message = str(info.value)
    assert "algo was 'ppo', now 'grpo'" in message and "data was '/elsewhere/imdb'" in message
    assert "config.learning_rate" not in message  # only what differs is named


@pytest.mark.slow
def test_trl_runs_leave_no_temp_folder(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    train.main(["--algo", "grpo", "--profile", "smoke", "--out", str(tmp_path / "run"), "--steps", "1",
                "--batch-size", "16", "--mini-batch-size", "8", "--no-progress", "--report-to", "tensorboard"])
    assert [p.name for p in scratch.iterdir() if p.name.startswith("grpo-")] == []
    # TRL runs save their policy too (no value head: GRPO has none), loadable with transformers alone
    from transformers import AutoModelForCausalLM

    saved = tmp_path / "run" / "policy"
    assert (saved / "model.safetensors").is_file() and not (saved / "value_head.safetensors").exists()
    assert type(AutoModelForCausalLM.from_pretrained(saved)).__name__ == "GPT2LMHeadModel"
    # --report-to tensorboard reaches TRL's own integration, whose events land in OUT/tensorboard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/reward"} <= set(events.Tags()["scalars"]), events.Tags()["scalars"]
