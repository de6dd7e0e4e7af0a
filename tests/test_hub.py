import time

import pytest

from rlhf_helpers.hub import HubUnreachableError, ensure_available, hub_problem
from rlhf_helpers.models import model_ids
from rlhf_helpers.profiles import get_profile


@pytest.fixture
def dead_hub(monkeypatch):
    """A hub endpoint nobody listens on (a closed loopback port), online mode."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_unreachable_hub_fails_fast_and_names_smoke(dead_hub):
    assert hub_problem(timeout=1) is not None
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="RLHF_PROFILE=smoke"):
        model_ids(get_profile("cpu"))
    assert time.perf_counter() - start < 5


def test_offline_mode_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="offline mode"):
        ensure_available("lvwerra/distilbert-imdb")


def test_dataset_hint_mentions_local_imdb(dead_hub):
    with pytest.raises(HubUnreachableError, match="RLHF_IMDB_DIR"):
        ensure_available("stanfordnlp/imdb", repo_type="dataset")


def test_local_folder_needs_no_hub(dead_hub, tmp_path):
    ensure_available(str(tmp_path))  # no error, no network


def test_unresolvable_host_is_reported_as_dns_not_timeout(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-host.invalid")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="could not be resolved") as info:
        ensure_available("lvwerra/distilbert-imdb")
    assert "did not answer within" not in str(info.value)
    assert time.perf_counter() - start < 5


def test_refused_connection_is_reported_as_refused(dead_hub):
    with pytest.raises(HubUnreachableError, match="refused"):
        ensure_available("lvwerra/distilbert-imdb")
