"""Experiment trackers, the ecosystem's way: `--report-to none|tensorboard|trackio|wandb`.

TRL's runs (GRPO, RLOO, DPO) pass it to their config's `report_to`, so transformers' own integrations log TRL's
metrics. The hand-built PPO loop logs its `metrics.jsonl` fields (`train/<name>`) and its held-out evaluations
(`eval/<name>`) through the same libraries with `MetricLogger`, a few lines per tracker, not a tracker of our own.
TensorBoard events go to `OUT/tensorboard/` for every algorithm. The trackers are optional installs:
`pip install "rlhf-helpers[trackers]"` (tensorboard, trackio) or `pip install wandb`.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from .faults import SettingError

TRACKERS = ("none", "tensorboard", "trackio", "wandb")
PROJECT = "rlhf-course"
"""The trackio / wandb project runs are logged to (WANDB_PROJECT, as transformers reads it, overrides it for wandb)."""
_PACKAGE = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}


def check_tracker(name: str) -> None:
    """Refuse, before anything loads, a tracker that is unknown or not installed, saying what to install."""
    if name not in TRACKERS:
        raise SettingError(f"--report-to must be one of {', '.join(TRACKERS)}; got {name!r}.")
    package = _PACKAGE.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise SettingError(f"--report-to {name} needs the {package} package, which is not installed: "
                           f"pip install {package} (or pip install \"rlhf-helpers[trackers]\"), or pass --report-to "
                           f"none.")


def tensorboard_dir(out: Path) -> Path:
    return Path(out) / "tensorboard"


class MetricLogger:
    """Numeric fields of each record to the chosen tracker, under `prefix/`, at the given step."""

    def __init__(self, name: str, out: Path, config: dict | None = None):
        check_tracker(name)
        self.name, self._run = name, None
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._run = SummaryWriter(log_dir=str(tensorboard_dir(out)))
        elif name == "trackio":
            import trackio

            self._run = trackio.init(project=PROJECT, name=Path(out).name, config=config or {})
        elif name == "wandb":
            import os

            import wandb

            self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=Path(out).name,
                                   config=config or {}, dir=str(out))

    def log(self, record: dict, step: int, prefix: str = "train") -> None:
        if self._run is None:
            return
        values = {f"{prefix}/{k}": float(v) for k, v in record.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self.name == "tensorboard":
            for key, value in values.items():
                self._run.add_scalar(key, value, step)
        else:
            self._run.log(values, step=step)

    def close(self) -> None:
        if self._run is None:
            return
        if self.name == "tensorboard":
            self._run.close()
        else:
            self._run.finish()
        self._run = None


def trl_logging(name: str, out: Path):
    """For a TRL run: its TensorBoard events in OUT/tensorboard (transformers' TensorBoardCallback reads
    TENSORBOARD_LOGGING_DIR when the trainer is built; TRL's own output_dir is a scratch folder), and wandb's files
    beside the run. A context manager that restores the environment afterwards."""
    import contextlib
    import os

    @contextlib.contextmanager
    def scope():
        settings = {"tensorboard": {"TENSORBOARD_LOGGING_DIR": str(tensorboard_dir(out))},
                    "wandb": {"WANDB_DIR": str(out), "WANDB_PROJECT": os.environ.get("WANDB_PROJECT", PROJECT)},
                    "trackio": {"TRACKIO_PROJECT": os.environ.get("TRACKIO_PROJECT", PROJECT)}}.get(name, {})
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return scope()
