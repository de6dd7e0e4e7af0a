"""The GPU check script is ready before a GPU is: its --dry-run runs every step on this machine's CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_dry_run_runs_every_step_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, timeout=900)
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    steps = result["steps"]
    assert steps["notebooks"]["ok"], steps["notebooks"]["tail"]
    assert steps["notebooks"]["per_notebook"]["01_imdb_and_reward.ipynb"]["passed"]
    assert steps["throughput"]["ok"] and steps["throughput"]["result"]["samples_per_second"] > 0
    if os.environ.get("RLHF_GPT2_TOKENIZER_DIR"):  # the rehearsal's GPT-2-sized stand-ins need the real tokenizer
        assert done.returncode == 0, done.stdout[-3000:]
        for profile in ("gpu", "cpu"):
            rehearsal = steps[f"rehearsal_{profile}"]
            assert rehearsal["ok"], rehearsal["tail"]
            assert rehearsal["result"]["profile"] == profile and rehearsal["result"]["seconds_per_step"] > 0
            assert set(rehearsal["result"]["phase_seconds"]) >= {"generate", "score", "forward", "update"}
            assert rehearsal["result"]["peak_memory_mb"] > 0
    else:
        assert done.returncode == 1 and "RLHF_GPT2_TOKENIZER_DIR" in steps["rehearsal_gpu"]["tail"]
    again = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr  # a finished check is never overwritten
