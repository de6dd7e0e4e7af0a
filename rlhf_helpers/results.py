"""The measured results that ship with the package, and the machine a result was measured on.

`benchmarks/*.py` run the multi-seed studies headless and write `rlhf_helpers/results/KIND_PROFILE.json` (with the
machine and the date inside); the notebooks draw their own run against them:

    load_result("frontier", "smoke")            # benchmarks/frontier.py: the reward–KL frontier (notebook 08)
    load_result("overoptimization", "smoke")    # benchmarks/overoptimization_seeds.py (notebook 07)
    load_result("kl_control", "smoke")          # benchmarks/kl_control.py (notebook 05)
    load_result("dpo_learning_rate", "smoke")   # benchmarks/dpo_learning_rate.py (notebook 08)
    load_result("grpo_positions", "smoke")      # benchmarks/grpo_positions.py (notebook 06)
"""

from __future__ import annotations

import json
import platform
from importlib.resources import files
from pathlib import Path

import torch

KINDS = ("frontier", "overoptimization", "kl_control", "dpo_learning_rate", "grpo_positions", "sft_longer")


def load_result(kind: str, profile_name: str) -> dict | None:
    """The shipped result of benchmark `kind` for a profile; None if none was measured for it (only `smoke` is: the
    hub models cannot be reached from the machines the course is built on)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown result {kind!r}; the package ships {', '.join(KINDS)}.")
    path = files("rlhf_helpers").joinpath(f"results/{kind}_{profile_name}.json")
    return json.loads(path.read_text()) if path.is_file() else None


def machine() -> str:
    """This machine as a result records it: the CPU model, the vector unit torch dispatches to (seeded runs repeat
    only on the same one: AVX2 and AVX512 builds differ in their last digits), torch's threads and version."""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return (f"{model} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")
