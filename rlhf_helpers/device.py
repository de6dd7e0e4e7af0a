"""Where tensors live and in what precision: the one place the course decides either.

- `default_device()`: CUDA when there is a GPU, else the CPU.
- `autocast_dtype(device)`: bfloat16 only where the GPU computes it natively (compute capability >= 8.0: A100,
  H100, RTX 30xx/40xx, L4); float32 everywhere else, including Colab's T4 (7.5), where bf16 is emulated and slow.
- `autocast(device)`: the matching `torch.autocast` context (a no-op in float32).
- `trl_precision(device)`: the same choice as `TrainingArguments` keywords, so TRL runs follow the same rule.
- `rng_state()` / `set_rng_state()`: the CPU *and* CUDA generators together. Sampling on a GPU draws from the CUDA
  generator, so saving only `torch.get_rng_state()` does not replay a CUDA rollout.
"""

from __future__ import annotations

import os

import contextlib

import torch

BF16_MIN_CAPABILITY = (8, 0)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """bfloat16 on a GPU with native bf16 (compute capability >= 8.0), else None (stay in float32)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY else None


def autocast(device: torch.device | str):
    """Autocast the big matmuls to bf16 where `autocast_dtype` allows it; log-probs stay float32 (callers upcast)."""
    dtype = autocast_dtype(device)
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def trl_precision(device: torch.device | str | None = None) -> dict:
    """`bf16` / `use_cpu` keywords for a TRL config, chosen exactly as `autocast_dtype` chooses."""
    device = torch.device(device) if device is not None else default_device()
    return {"bf16": autocast_dtype(device) == torch.bfloat16, "use_cpu": device.type != "cuda"}


def world_size() -> int:
    """Processes in this run: WORLD_SIZE as torchrun / accelerate launch set it (1 when started with python)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rng_state() -> dict:
    """The global CPU generator's state, and every CUDA device's when there are any."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` saved."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
