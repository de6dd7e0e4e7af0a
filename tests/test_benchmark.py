"""The benchmark script stays runnable and reports what the README quotes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_benchmark_runs_on_smoke_models(algo):
    out = subprocess.run([sys.executable, str(SCRIPT), "--models", "smoke", "--algo", algo, "--steps", "1",
                          "--batch-size", "16", "--mini-batch-size", "8", "--epochs", "2"],
                         capture_output=True, text=True, timeout=120)  # ~5 s of work, world prebuilt
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["algo"] == algo and result["samples_per_second"] > 0 and result["peak_rss_mb"] > 0
    assert result["phase_seconds"]["generate"] > 0
    if algo == "ppo":
        assert result["response_length"] == 16  # EOS suppressed: equal lengths in both algorithms
        assert result["step_over_generate_forward_update"] >= 1.0
