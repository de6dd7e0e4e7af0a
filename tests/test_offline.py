import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from rlhf_helpers.fixture import FIXTURE_DIR
from rlhf_helpers.offline import FAST, build_offline_world


def test_cached_build_returns_in_seconds_without_rebuilding(fast_world):
    start = time.perf_counter()
    again = build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=fast_world.root.parent,
                                verbose=False)
    assert time.perf_counter() - start < 5
    assert again.root == fast_world.root and again.info == fast_world.info


def test_same_recipe_same_weights(fast_world, tmp_path):
    other = build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=tmp_path, verbose=False)
    for part in ("policy", "classifier"):
        a = load_file(getattr(fast_world, part) / "model.safetensors")
        b = load_file(getattr(other, part) / "model.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{part}.{name} differs between two seeded builds"
    assert (fast_world.tokenizer / "tokenizer.json").read_text() == (other.tokenizer / "tokenizer.json").read_text()


def test_other_seed_other_weights(fast_world, tmp_path):
    import dataclasses

    other = build_offline_world(dataclasses.replace(FAST, seed=1), data_source=str(FIXTURE_DIR),
                                cache_dir=tmp_path, verbose=False)
    a = load_file(fast_world.policy / "model.safetensors")
    b = load_file(other.policy / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_tokenizer_keeps_gpt2_quirks(fast_world):
    tok = AutoTokenizer.from_pretrained(fast_world.policy)
    assert tok.pad_token is None, "GPT-2 has no pad token; the course must add one itself"
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.all_special_tokens == ["<|endoftext|>"]
    assert tok.decode(tok("A great movie!<br />")["input_ids"]) == "A great movie!<br />"  # byte-level


def test_built_models_load_through_the_hub_calls(fast_world):
    tok = AutoTokenizer.from_pretrained(fast_world.policy)
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy, use_safetensors=True)
    ids = tok("This movie", return_tensors="pt")
    out = policy.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                          pad_token_id=tok.eos_token_id)
    assert out.shape == (1, ids["input_ids"].shape[1] + 5)
    clf = pipeline("sentiment-analysis", model=str(fast_world.classifier), device="cpu")
    assert set(clf.model.config.id2label.values()) == {"NEGATIVE", "POSITIVE"}
    assert clf("A lovely film")[0]["label"] in {"NEGATIVE", "POSITIVE"}


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    from rlhf_helpers import offline

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "_finetune_classifier", boom)
    with pytest.raises(KeyboardInterrupt):
        build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=tmp_path, verbose=False)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []


def test_gold_judge_is_a_second_independent_classifier(fast_world):
    gold = pipeline("sentiment-analysis", model=str(fast_world.gold), device="cpu")
    reward = pipeline("sentiment-analysis", model=str(fast_world.classifier), device="cpu")
    assert set(gold.model.config.id2label.values()) == {"NEGATIVE", "POSITIVE"}
    assert gold.model.config.model_type == "bert" != reward.model.config.model_type  # another architecture
    assert gold.tokenizer.truncation_side == "left"  # it reads the end of a long review, where the verdict is
    assert fast_world.info["gold_eval_reviews"] > 0 and 0 <= fast_world.info["gold_test_accuracy"] <= 1


def test_gold_model_override_names_the_variable(fast_world, monkeypatch):
    from rlhf_helpers import get_profile
    from rlhf_helpers.models import GOLD_ENV, gold_model_id

    monkeypatch.setenv(GOLD_ENV, str(fast_world.gold))
    assert gold_model_id(get_profile("gpu")) == str(fast_world.gold)  # no hub access needed
    monkeypatch.setenv(GOLD_ENV, str(fast_world.root / "no-such-judge"))
    with pytest.raises(FileNotFoundError, match=GOLD_ENV):
        gold_model_id(get_profile("smoke"))


_BUILD_IN_A_PROCESS = """
import json, sys
from rlhf_helpers.fixture import FIXTURE_DIR
from rlhf_helpers.offline import FAST, build_offline_world
world = build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=sys.argv[1])
print("WORLD", json.dumps(world.info["seconds"]))
"""


@pytest.mark.slow  # two FAST builds at once: about 14 s on 2 cores
def test_concurrent_builders_wait_for_one_build(tmp_path):
    """Two processes asking for the same uncached world at once: one builds, the other waits and reuses it."""
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_IN_A_PROCESS, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]  # FAST builds in ~7 s
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    logs = "".join(out for out, _ in outputs)
    assert logs.count("Building the offline world") == 1, logs
    # Both return the one build's facts (its timings are unique to that build).
    assert len({out.split("WORLD ")[1] for out, _ in outputs}) == 1
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_a_killed_build_leaves_nothing_the_next_build_keeps(tmp_path):
    from rlhf_helpers.offline import world_key

    name = f"offline-world-{world_key(FAST, str(FIXTURE_DIR))}"
    stale = tmp_path / f"{name}.tmp-killed"
    (stale / "policy").mkdir(parents=True)
    (stale / "policy" / "model.safetensors").write_bytes(b"half a file")
    other_stale = tmp_path / "offline-world-0123456789abcdef.tmp-killed"  # another recipe's, nobody building it
    other_stale.mkdir()
    build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=tmp_path, verbose=False)
    assert not stale.exists() and not other_stale.exists()
    assert (tmp_path / name / "build_info.json").is_file()


@pytest.mark.slow  # a FAST rebuild: about 7 s on 2 cores, per damage
@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete_tokenizer"])
def test_a_damaged_cache_is_detected_and_rebuilt(fast_world, tmp_path, damage, capsys):
    from rlhf_helpers.offline import verify_world

    copy = shutil.copytree(fast_world.root, tmp_path / fast_world.root.name)  # the session's build, to damage
    stamp = (copy / "build_info.json").stat().st_mtime_ns
    world = build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=tmp_path, verbose=False)
    assert world.root == copy and (copy / "build_info.json").stat().st_mtime_ns == stamp  # used as it was
    weights = world.classifier / "model.safetensors"
    original = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(original[: len(original) // 2])
        culprit = weights
    elif damage == "bitflip":
        flipped = bytearray(original)
        flipped[len(flipped) - 100] ^= 0x01  # deep inside a weight tensor: loads without any error
        weights.write_bytes(bytes(flipped))
        culprit = weights
    else:
        culprit = world.policy / "tokenizer.json"
        culprit.unlink()
    assert str(culprit) in verify_world(world.root)
    rebuilt = build_offline_world(FAST, data_source=str(FIXTURE_DIR), cache_dir=tmp_path, verbose=True)
    assert "damaged" in capsys.readouterr().out
    assert verify_world(rebuilt.root) is None
    assert weights.read_bytes() == original  # the seeded rebuild restores the very same weights


def test_world_records_checksums_of_every_file(fast_world):
    recorded = json.loads((fast_world.root / "checksums.json").read_text())
    files = {str(p.relative_to(fast_world.root)) for p in fast_world.root.rglob("*")
             if p.is_file() and p.name != "checksums.json"}
    assert set(recorded) == files and "policy/model.safetensors" in recorded
    assert os.path.getsize(fast_world.root / "checksums.json") > 0
