"""Checkpoints that lose nothing: a resumed run ends exactly where an uninterrupted one would.

Saved every N steps in `DIR/checkpoints/step-XXXXXX/`:
- `policy.safetensors`, `value_head.safetensors`   weights (safetensors: no pickle, nothing executes on load);
- `optimizer.pt`                                    Adam's moments, loaded with `weights_only=True`;
- `rng.safetensors`                                 the global torch RNG (sampling) and the run's generator
                                                    (prompt order, minibatch shuffling), plus CUDA's if present;
- `state.json`                                      step, KL controller, metrics so far, anything extra.
A checkpoint is written to a temporary folder and renamed into place, so a run killed mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from .device import rng_state, set_rng_state
from .faults import write_bytes
from .ppo_loop import TrainState


def _save_tensors(tensors: dict, path: Path) -> None:
    # Serialized to bytes, then written by Python: a full disk is then an OSError (ENOSPC) naming the file, where
    # safetensors' own writer raises an opaque SafetensorError and torch.save a "[enforce fail] unexpected pos".
    write_bytes(path, save(tensors))


def checkpoint_dirs(out: Path) -> list[Path]:
    root = Path(out) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []


def save_checkpoint(state: TrainState, out: Path, extra: dict | None = None, keep: int = 2) -> Path:
    root = Path(out) / "checkpoints"
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-step-{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # Tied weights (GPT-2's lm_head is wte) are stored once; load_state_dict(strict=False) re-ties them.
        policy_state = {k: v.detach().contiguous().cpu() for k, v in state.policy.state_dict().items()
                        if k != "lm_head.weight"}
        _save_tensors(policy_state, tmp / "policy.safetensors")
        _save_tensors({k: v.contiguous().cpu() for k, v in state.value_head.state_dict().items()},
                      tmp / "value_head.safetensors")
        buffer = io.BytesIO()
        torch.save(state.optimizer.state_dict(), buffer)
        write_bytes(tmp / "optimizer.pt", buffer.getvalue())
        global_rng = rng_state()  # the CPU generator and every CUDA device's (sampling on a GPU draws from CUDA's)
        rng = {"torch": global_rng["cpu"], "generator": state.generator.get_state()}
        if "cuda" in global_rng:
            rng["cuda"] = torch.stack(global_rng["cuda"])
        _save_tensors(rng, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, "kl_ctl": state.kl_ctl.state_dict(),
                                                    "history": state.history, "extra": extra or {}}))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or Ctrl-C mid-save: free the space, keep the last one
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(state: TrainState, path: Path) -> dict:
    """Restore `state` in place from a checkpoint folder; returns its `extra` dict."""
    path = Path(path)
    missing, unexpected = state.policy.load_state_dict(load_file(path / "policy.safetensors"), strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise RuntimeError(f"Checkpoint {path} does not fit this policy (missing {missing}, unexpected {unexpected}).")
    state.value_head.load_state_dict(load_file(path / "value_head.safetensors"))
    state.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True,
                                               map_location=state.device))
    rng = load_file(path / "rng.safetensors")
    set_rng_state({"cpu": rng["torch"], **({"cuda": list(rng["cuda"].unbind())} if "cuda" in rng else {})})
    state.generator.set_state(rng["generator"])
    saved = json.loads((path / "state.json").read_text())
    state.step = saved["step"]
    state.kl_ctl.load_state_dict(saved["kl_ctl"])
    state.history = saved["history"]
    return saved["extra"]
