"""Fail fast when the Hugging Face Hub is out of reach.

`from_pretrained` retries an unreachable hub for about 25 seconds before it gives up, and on some
networks a connection hangs for minutes. The course checks first, in about a second, and says what to do.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from .faults import CourseError

HUB_TIMEOUT_S = 3.0


class HubUnreachableError(CourseError, RuntimeError):
    """The hub cannot be reached and the files are not in the local cache."""


def _offline_mode() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def is_cached(repo_id: str, repo_type: str = "model") -> bool:
    """True when `repo_id` is already in the local Hugging Face cache (so no network is needed)."""
    from huggingface_hub import try_to_load_from_cache

    probe = "config.json" if repo_type == "model" else "README.md"
    found = try_to_load_from_cache(repo_id, probe, repo_type=repo_type)
    return isinstance(found, str)


def hub_problem(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """None if one TCP connection to the hub endpoint opens within `timeout` seconds, else what went wrong."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"the hub's address {url.hostname!r} could not be resolved (no DNS: offline?)"
    except TimeoutError:
        return f"the hub ({url.hostname}) did not answer within {timeout:.0f} s"
    except OSError as error:
        return f"the hub ({url.hostname}:{port}) refused or dropped the connection ({error.strerror or error})"


def ensure_available(repo_id: str, repo_type: str = "model", timeout: float = HUB_TIMEOUT_S) -> None:
    """Return if `repo_id` is a local folder, is cached, or the hub answers; else raise at once."""
    if os.path.isdir(repo_id):
        return
    if is_cached(repo_id, repo_type):
        return
    problem = None if _offline_mode() else hub_problem(timeout)
    if not _offline_mode() and problem is None:
        return
    why = "offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)" if _offline_mode() else problem
    hint = ("point RLHF_IMDB_DIR at a local copy of IMDB (train/test/unsupervised .parquet), or "
            if repo_type == "dataset" else "")
    raise HubUnreachableError(
        f"Cannot load {repo_type} {repo_id!r}: {why} and it is not in the local cache. "
        f"To run the course without a network, {hint}use the offline profile: set RLHF_PROFILE=smoke "
        f"(or pass profile='smoke'), which builds tiny models locally.")
