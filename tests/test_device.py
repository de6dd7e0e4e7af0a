"""Device placement and precision: one place moves data, one function picks the precision, overrides for models."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhf_helpers import device as dev
from rlhf_helpers.models import model_ids
from rlhf_helpers.profiles import get_profile
from rlhf_helpers.sampling import pack

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA GPU of a given compute capability is present (no CUDA call reaches the driver)."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return install


@pytest.mark.parametrize("capability, expected", [((7, 5), None), ((7, 0), None), ((8, 0), torch.bfloat16),
                                                  ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bf16_only_where_the_gpu_has_it_natively(fake_gpu, capability, expected):
    fake_gpu(capability)  # 7.5 is Colab's T4: bf16 there is emulated, so the course stays in float32
    assert dev.autocast_dtype("cuda") == expected
    assert dev.trl_precision("cuda") == {"bf16": expected is not None, "use_cpu": False}


def test_trl_configs_follow_the_same_rule(fake_gpu):
    fake_gpu((7, 5))
    assert dev.trl_precision() == {"bf16": False, "use_cpu": False}
    fake_gpu((8, 0))
    assert dev.trl_precision() == {"bf16": True, "use_cpu": False}


def test_cpu_is_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.autocast_dtype("cpu") is None
    assert dev.trl_precision() == {"bf16": False, "use_cpu": True}
    with dev.autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_rng_state_round_trip_replays_sampling():
    state = dev.rng_state()
    first = torch.rand(5)
    dev.set_rng_state(state)
    assert torch.equal(torch.rand(5), first)


def test_packed_batch_moves_in_one_place():
    batch = pack([torch.tensor([5, 6]), torch.tensor([7])], [torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=0)
    moved = batch.to("meta")  # a second device every machine has
    for name in ("input_ids", "attention_mask", "position_ids", "response_ids", "response_mask"):
        assert getattr(moved, name).device.type == "meta", name
        assert getattr(batch, name).device.type == "cpu", "the original is left where it was"
    assert moved.query_len == batch.query_len


def test_helpers_return_tensors_on_the_models_device(fast_world):
    """On this machine the device is the CPU; the assertion names where every output lives so CUDA runs check it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from rlhf_helpers.evaluation import sequence_logprobs
    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.reward import SentimentReward
    from rlhf_helpers.sampling import sample_responses

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy).eval()
    samples = sample_responses(policy, tok, [tok("A film")["input_ids"]] * 3, 2, 4, seed=0)
    logprobs, mask = sequence_logprobs(policy, samples, tok.pad_token_id)
    reward = SentimentReward(pipeline("sentiment-analysis", model=str(fast_world.classifier), device="cpu"))
    for tensor in (logprobs, mask, reward(["A fine film"])):
        assert tensor.device == policy.device


def test_local_model_folders_override_hub_ids(fast_world, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nobody listens: any hub call would fail
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLHF_POLICY_MODEL", str(fast_world.policy))
    monkeypatch.setenv("RLHF_REWARD_MODEL", str(fast_world.classifier))
    start = time.perf_counter()
    assert model_ids(get_profile("gpu")) == (str(fast_world.policy), str(fast_world.classifier))
    assert time.perf_counter() - start < 2, "a local folder needs no network check"
    assert "overridden by RLHF_POLICY_MODEL" in get_profile("gpu").describe()


def test_a_missing_override_folder_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_POLICY_MODEL", str(tmp_path / "gpt2-imdb"))
    with pytest.raises(FileNotFoundError, match="RLHF_POLICY_MODEL=.*is not a folder"):
        model_ids(get_profile("cpu"))


@pytest.mark.slow
def test_two_processes_run_grpo_with_torchrun(tmp_path, monkeypatch):
    """The TRL runs scale out unchanged: two CPU processes (gloo) under torchrun finish, write one set of files with
    the same summary keys as one process, and spend the same episodes (each process takes half of a step)."""
    common = ["-m", "rlhf_helpers.train", "--algo", "grpo", "--profile", "smoke", "--steps", "2", "--batch-size",
              "16", "--mini-batch-size", "16", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", *common, "--out", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=120, env=env)  # ~20 s of work
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=120, env=env)  # ~20 s of work
    assert one.returncode == 0, one.stderr[-3000:]
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert set(s2) == set(s1) and set(s2["after"]) == set(s1["after"])
    assert s2["episodes"] == s1["episodes"] == 32
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 2, "one process writes the log"
    from rlhf_helpers import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):  # the hand-built loop is one process: refused before anything loads
        train.parse_args(["--algo", "ppo", "--profile", "smoke", "--out", str(tmp_path / "ppo")])
