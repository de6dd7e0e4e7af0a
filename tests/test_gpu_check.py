"""The GPU check script is ready before a GPU is: its --dry-run runs every step on this machine's CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every step on the smoke world: a notebook, a PPO step, the rehearsal

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_dry_run_runs_every_step_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, timeout=900)
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    steps = result["steps"]
    assert steps["notebooks"]["ok"], steps["notebooks"]["tail"]
    assert steps["notebooks"]["per_notebook"]["gpu_check_dry_run.ipynb"]["passed"]
    throughput = steps["throughput"]["result"]  # benchmarks/throughput.py, smoke models, one PPO step
    assert steps["throughput"]["ok"] and throughput["algo"] == "ppo" and throughput["samples_per_second"] > 0
    assert throughput["peak_rss_mb"] > 0 and throughput["phase_seconds"]["generate"] > 0
    assert throughput["response_length"] == 16  # EOS suppressed: equal lengths in both algorithms
    assert throughput["step_over_generate_forward_update"] >= 1.0
    if os.environ.get("RLHF_GPT2_TOKENIZER_DIR"):  # the rehearsal's GPT-2-sized stand-ins need the real tokenizer
        assert done.returncode == 0, done.stdout[-3000:]
        # the cut-down rehearsal: GPT-2's vocabulary and width (2 layers), one step, a tiny batch
        for profile in ("gpu", "cpu"):
            rehearsal = steps[f"rehearsal_{profile}"]
            assert rehearsal["ok"], rehearsal["tail"]
            report = rehearsal["result"]
            assert report["profile"] == profile and report["device"].startswith("cpu")
            assert report["policy_params"] > 50_000_000  # GPT-2's 50,257 x 768 embedding alone is 38.6M
            assert set(report["phase_seconds"]) == {"generate", "score", "forward", "update"}
            assert all(v > 0 for v in report["phase_seconds"].values())
            assert report["seconds_per_step"] > 0 and report["eval_seconds"] > 0 and report["peak_memory_mb"] > 500
        projected = steps["rehearsal_cpu"]["result"]["projected_minutes"]  # PPO and GRPO measured there
        assert set(projected) == {"05_ppo_from_scratch", "06_trl_grpo_rloo"}
        assert projected["06_trl_grpo_rloo"] > projected["05_ppo_from_scratch"]
    else:
        assert done.returncode == 1 and "RLHF_GPT2_TOKENIZER_DIR" in steps["rehearsal_gpu"]["tail"]
    again = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr  # a finished check is never overwritten
