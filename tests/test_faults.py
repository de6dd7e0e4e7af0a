"""Faults that explain themselves and one writer per output folder (runner, study, frontier).

Each case the user can meet: a second run into the same --out (two real processes), a lock left by a killed
process, a full disk while checkpointing, Ctrl-C, an unwritable --out, a model folder that is not a model for its
role, a data file that is not parquet or lacks its columns, CUDA out of memory, and a run that dies while writing its
results. Each message is a few lines naming the file or setting and the fix, exit 2 (130 for Ctrl-C), no traceback.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_helpers import faults, models, train, trainers
from rlhf_helpers.profiles import get_profile

TINY_RUN = ["--algo", "ppo", "--profile", "smoke", "--steps", "2", "--batch-size", "16", "--mini-batch-size", "8",
            "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_loads(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the fault was reported")

    for module in (models, trainers):  # every module that looks the models up
        monkeypatch.setattr(module, "model_ids", forbidden)


def _env(**extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _holder(out: Path):
    """Another process (another kernel, a terminal) holding `out`'s lock until it is killed."""
    code = ("import sys, time; from rlhf_helpers.faults import hold_output\n"
            "with hold_output(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


# --- one writer per --out --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_into_the_same_out_is_refused_at_once(tmp_path):
    """Two real runs started into one --out a moment apart: the second is refused naming the first's process, and
    the first ends with exactly its own records."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "rlhf_helpers.train", *TINY_RUN, "--steps", "4", "--out",
                              str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 120
    while not (out / faults.LOCK_NAME).is_file() or f'"pid": {first.pid}' not in (out / faults.LOCK_NAME).read_text():
        assert first.poll() is None, first.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    for extra in ([], ["--resume"]):
        start = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "rlhf_helpers.train", *TINY_RUN, "--steps", "4", "--out",
                                 str(out), *extra], capture_output=True, text=True, env=_env(), timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is in use by process {first.pid}" in second.stderr and "choose another --out" in second.stderr
        _no_traceback(second.stderr)
        assert time.perf_counter() - start < 60  # refused before any model loads (mostly Python's start-up)
    assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4, "one writer: no interleaved records"


def test_run_from_a_second_kernel_is_refused_and_a_killed_holder_blocks_nobody(tmp_path, no_model_loads):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(faults.OutputBusyError, match=f"in use by process {holder.pid}"):
            train.run(train.RunSpec("ppo", steps=1), get_profile("smoke"), out)
        assert faults.output_holder(out).startswith(f"process {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / faults.LOCK_NAME).is_file(), "the killed process's lock file is still there ..."
    assert faults.output_holder(out) is None, "... and blocks nobody: the kernel released the lock with the process"
    train.parse_args([*TINY_RUN, "--out", str(out)])  # accepted


def test_the_study_and_the_frontier_have_one_writer_too(tmp_path, capsys):
    from rlhf_helpers import overoptimization

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import frontier as frontier_cli

    for out, main in ((tmp_path / "study", lambda o: overoptimization.main(["--profile", "smoke", "--out", o])),
                      (tmp_path / "frontier", lambda o: frontier_cli.main(["--profile", "smoke", "--out", o]))):
        holder = _holder(out)
        try:
            with pytest.raises(SystemExit) as refused:
                main(str(out))
            assert refused.value.code == 2
            err = capsys.readouterr().err
            assert f"in use by process {holder.pid}" in err, err
            _no_traceback(err)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    holder = _holder(tmp_path / "study2")
    try:
        with pytest.raises(faults.OutputBusyError):
            overoptimization.run_study(get_profile("smoke"), tmp_path / "study2")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# --- Ctrl-C, a full disk, CUDA out of memory ---------------------------------------------------------------------


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "train_seconds")}


@pytest.mark.slow
def test_ctrl_c_says_where_it_stopped_and_the_printed_command_resumes_exactly(tmp_path, reference_run):
    """A real SIGINT after the first checkpoint: exit 130, the message names the step, the checkpoint and the
    command; running that command ends where an uninterrupted run ends."""
    args = [*reference_run[2], "--save-every", "2"]
    for attempt in range(3):  # the short run can finish before a loaded machine delivers the signal: try again
        out = tmp_path / f"b{attempt}"
        # SIGINT back to its default in the child: a suite started in the background of a shell without job control
        # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt (seen in CI: exit 0, no message)
        proc = subprocess.Popen([sys.executable, "-m", "rlhf_helpers.train", *args, "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 300
        while not (out / "checkpoints" / "step-000002" / "state.json").exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
        if not (code == 0 and (out / "summary.json").exists()):
            break
    assert code == 130, err[-3000:]
    _no_traceback(err)
    assert "Interrupted at step" in err and "The last checkpoint, step" in err, err
    command = err.split("Continue from it with: ")[1].strip().splitlines()[0]
    assert command.endswith("--resume") and str(out) in command
    assert not (out / "summary.json").exists()
    import shlex

    cmd = shlex.split(command)
    assert cmd[:3] == ["python", "-m", "rlhf_helpers.train"]
    resumed = subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _comparable(json.loads((out / "summary.json").read_text())) == _comparable(reference_run[1])


@pytest.mark.slow
def test_ctrl_c_without_checkpoints_says_nothing_can_be_resumed(tmp_path, monkeypatch, capsys):
    from rlhf_helpers import ppo_loop

    real_step, calls = ppo_loop.ppo_step, []

    def interrupted_step(state):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(state)

    monkeypatch.setattr(ppo_loop, "ppo_step", interrupted_step)
    with pytest.raises(SystemExit) as stopped:
        train.main([*TINY_RUN, "--steps", "3", "--out", str(tmp_path / "run")])
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "Interrupted at step 1 of 3" in err and "--save-every 0" in err and "nothing can be resumed" in err, err


@pytest.mark.slow
def test_disk_full_while_checkpointing_names_what_is_intact_and_resume_ends_where_it_would_have(
        tmp_path, monkeypatch, capsys, reference_run):
    from rlhf_helpers import checkpoint

    args = [*reference_run[2], "--save-every", "2"]
    real_write, out = checkpoint.write_bytes, tmp_path / "b"

    def fills_up(path, data):
        if "step-000004" in str(path) and path.name == "optimizer.pt":  # the disk fills during the 2nd checkpoint
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "write_bytes", fills_up)
    with pytest.raises(SystemExit) as stopped:
        train.main([*args, "--out", str(out)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "No space left on the device that holds" in err and "optimizer.pt" in err, err
    assert "The last checkpoint, step 2, is intact" in err and "--resume" in err, err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"], "the half-written one is removed"
    assert train.run_status(out) == "partial"
    monkeypatch.setattr(checkpoint, "write_bytes", real_write)  # space freed
    resumed = train.main([*args, "--out", str(out), "--resume"])
    assert _comparable(resumed) == _comparable(reference_run[1])


@pytest.mark.slow
def test_cuda_out_of_memory_names_the_setting_to_lower(tmp_path, monkeypatch, capsys):
    import torch

    from rlhf_helpers import ppo_loop

    def out_of_memory(state, rollout):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ppo_loop, "ppo_update", out_of_memory)
    with pytest.raises(SystemExit) as stopped:
        train.main([*TINY_RUN, "--out", str(tmp_path / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "CUDA ran out of memory at step 0 of 2" in err and "Lower --mini-batch-size (try 4" in err, err


def test_rlhf_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("RLHF_DEBUG", "1")
    with pytest.raises(faults.DataFileError):
        faults.run_cli(lambda: (_ for _ in ()).throw(faults.DataFileError("broken")))
    monkeypatch.delenv("RLHF_DEBUG")
    with pytest.raises(SystemExit) as stopped:
        faults.run_cli(lambda: (_ for _ in ()).throw(faults.DataFileError("broken")))
    assert stopped.value.code == 2
    with pytest.raises(ZeroDivisionError):  # a bug is not an expected fault: its traceback is shown
        faults.run_cli(lambda: 1 / 0)


def test_disk_full_is_recognised_in_each_form_the_libraries_raise():
    assert faults.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert faults.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # safetensors' own writer on a full tmpfs (measured): no errno, only its text
    assert faults.is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert faults.is_disk_full(wrapped)
    assert not faults.is_disk_full(OSError(errno.ENOENT, "No such file or directory"))


# --- an unwritable --out, a broken data file, a model folder that is not a model -------------------------------


def test_an_unwritable_out_is_refused_before_loading(tmp_path, capsys, no_model_loads):
    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(SystemExit) as stopped:
        train.main([*TINY_RUN, "--out", str(tmp_path / "file.txt" / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "Cannot write the output folder" in err and "Choose an --out you can write to" in err, err


def _imdb_copy(tmp_path: Path) -> Path:
    from rlhf_helpers.fixture import FIXTURE_DIR

    folder = tmp_path / "imdb"
    shutil.copytree(FIXTURE_DIR, folder)
    return folder


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is not a readable parquet file"),
    ("csv", "is not a readable parquet file"),
    ("columns", "lacks column(s) ['label', 'text']"),
])
def test_a_damaged_data_file_is_named_before_loading(tmp_path, monkeypatch, capsys, no_model_loads, damage,
                                                     message):
    import pandas as pd

    folder = _imdb_copy(tmp_path)
    train_file = folder / "train.parquet"
    if damage == "truncate":  # an interrupted download or copy
        train_file.write_bytes(train_file.read_bytes()[:2000])
    elif damage == "csv":
        train_file.write_text("text,label\nGreat film,1\n")
    else:
        pd.DataFrame({"review": ["Great film"], "sentiment": [1]}).to_parquet(train_file)
    monkeypatch.setenv("RLHF_IMDB_DIR", str(folder))
    with pytest.raises(SystemExit) as stopped:
        train.main([*TINY_RUN, "--out", str(tmp_path / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert message in err and str(train_file) in err and "RLHF_IMDB_DIR" in err, err
    assert len(err.strip().splitlines()) <= 3


def _model_copy(source: Path, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*drop))
    return dest


def test_a_folder_that_is_not_a_model_for_its_role_is_refused(fast_world, tmp_path):
    check = models.check_model_folder
    check(fast_world.policy, "policy")  # the real thing passes
    check(fast_world.classifier, "reward")
    cases = [
        (_model_copy(fast_world.policy, tmp_path / "no-weights", ("*.safetensors",)), "policy",
         "has config.json but no weights (model.safetensors)"),
        (_model_copy(fast_world.policy, tmp_path / "no-config", ("config.json",)), "policy", "has no config.json"),
        (_model_copy(fast_world.policy, tmp_path / "no-tokenizer", ("tokenizer*", "vocab*", "merges*")), "policy",
         "has no tokenizer"),
        (fast_world.classifier, "policy", "a sequence classifier; the policy must be a causal language model"),
        (fast_world.policy, "reward", "a causal language model; the reward model must be a sentiment classifier"),
        (fast_world.policy, "gold", "the gold model must be a sentiment classifier"),
    ]
    pickled = _model_copy(fast_world.policy, tmp_path / "pickled", ("*.safetensors",))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    cases.append((pickled, "policy", "holds only pickle weights (pytorch_model.bin)"))
    truncated = _model_copy(fast_world.policy, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cases.append((truncated, "policy", "is not a readable safetensors file"))
    for folder, role, message in cases:
        with pytest.raises(faults.ModelFolderError) as refused:
            check(folder, role, models.POLICY_ENV if role == "policy" else models.REWARD_ENV)
        assert message in str(refused.value), (folder, str(refused.value))


@pytest.mark.slow
def test_swapped_model_variables_are_named_by_the_runner_and_the_study(fast_world, tmp_path, monkeypatch, capsys):
    from rlhf_helpers import overoptimization

    monkeypatch.setenv(models.POLICY_ENV, str(fast_world.classifier))
    monkeypatch.setenv(models.REWARD_ENV, str(fast_world.policy))
    with pytest.raises(SystemExit) as stopped:
        train.main([*TINY_RUN, "--out", str(tmp_path / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"{models.POLICY_ENV}=" in err and "Did you swap RLHF_POLICY_MODEL and RLHF_REWARD_MODEL?" in err, err
    assert train.run_status(tmp_path / "run") in ("missing", "empty"), "a refused start blocks nothing"
    monkeypatch.delenv(models.POLICY_ENV)
    monkeypatch.delenv(models.REWARD_ENV)
    monkeypatch.setenv(models.GOLD_ENV, str(fast_world.policy))
    with pytest.raises(SystemExit) as stopped:
        overoptimization.main(["--profile", "smoke", "--out", str(tmp_path / "study")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"{models.GOLD_ENV}=" in err and "the gold model must be a sentiment classifier" in err, err


# --- nothing half-written looks finished -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_dies_while_writing_its_results_is_partial_not_finished(tmp_path, monkeypatch):
    from rlhf_helpers import trainers

    def broken_plot(*args, **kwargs):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(trainers, "plot_training_curves", broken_plot)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the plot failed"):
        train.run(train.RunSpec("ppo", steps=1, batch_size=16, mini_batch_size=8), get_profile("smoke"), out,
                  progress=False)
    assert train.run_status(out) == "partial" and not (out / "summary.json").exists()
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name], "no temporary file is left behind"


def test_atomic_write_keeps_the_old_file_when_the_new_one_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(OSError):
        with faults.atomic_write(target) as tmp:
            tmp.write_text("half of the ne")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    faults.write_text_atomic(target, "new")
    assert target.read_text() == "new"


@pytest.mark.slow
@pytest.mark.parametrize("fault, code, message", [
    (KeyboardInterrupt, 130, "Interrupted while sampling the preference pairs"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/pairs"), 2,
     "No space left on the device that holds"),
])
def test_the_study_explains_ctrl_c_and_a_full_disk(tmp_path, monkeypatch, capsys, fault, code, message):
    from rlhf_helpers import overoptimization

    def fails(*args, **kwargs):
        raise fault

    monkeypatch.setattr(overoptimization, "make_preference_pairs", fails)
    with pytest.raises(SystemExit) as stopped:
        overoptimization.main(["--profile", "smoke", "--out", str(tmp_path / "study"), "--rl-steps", "1"])
    assert stopped.value.code == code
    err = capsys.readouterr().err
    _no_traceback(err)
    assert message in err and "nothing can be resumed: run the same command again" in err, err
    assert not (tmp_path / "study" / "summary.json").exists()


def test_compare_explains_a_full_disk_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from rlhf_helpers import compare

    monkeypatch.setattr(compare, "evaluate_policies", lambda *a, **k: {"policies": []})

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(compare, "write_text_atomic", full)
    with pytest.raises(SystemExit) as stopped:
        compare.main(["--profile", "smoke", "--policy", "unused", "--out", str(tmp_path / "compare.json")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "No space left on the device" in err and "Nothing was written; run the command again" in err, err
    assert not (tmp_path / "compare.json").exists()
