import os

import pandas as pd
import pytest

from rlhf_helpers.data import (
    clean_review,
    filter_and_clean,
    heldout_prompts,
    load_imdb,
    make_prompts,
    prompt_lengths,
)
from rlhf_helpers.fixture import FIXTURE_DIR, SPLIT_SIZES, generate_split
from rlhf_helpers.profiles import get_profile


def test_shipped_fixture_matches_its_generator():
    for split, n in SPLIT_SIZES.items():
        shipped = pd.read_parquet(FIXTURE_DIR / f"{split}.parquet")
        assert shipped.to_dict("list") == generate_split(split, n), split


def test_fixture_and_local_imdb_have_the_same_features(monkeypatch):
    imdb_dir = os.environ.get("RLHF_IMDB_DIR")  # set by .ci/run when the real IMDB sits beside the repo
    monkeypatch.delenv("RLHF_IMDB_DIR", raising=False)
    fixture = load_imdb("train", get_profile("smoke"))
    assert fixture.features["label"].names == ["neg", "pos"]
    assert set(fixture["label"]) == {0, 1}
    # Reading any folder in the hub's parquet layout gives identical features.
    same = load_imdb("test", source=str(FIXTURE_DIR))
    assert same.features == fixture.features
    if imdb_dir:
        assert load_imdb("test", source=imdb_dir).features == fixture.features


def test_env_folder_wins_over_fixture(monkeypatch, tmp_path):
    frame = pd.DataFrame({"text": ["x" * 250 + " great", "y" * 250 + " awful"], "label": [1, 0]})
    for split in ("train", "test", "unsupervised"):
        frame.to_parquet(tmp_path / f"{split}.parquet")
    monkeypatch.setenv("RLHF_IMDB_DIR", str(tmp_path))
    assert len(load_imdb("train", get_profile("smoke"))) == 2


def test_missing_split_gets_a_clear_error(tmp_path):
    pd.DataFrame({"text": ["a"], "label": [0]}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(FileNotFoundError, match=r"no test\.parquet.*train\.parquet"):
        load_imdb("test", source=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown IMDB split"):
        load_imdb("validation", source=str(tmp_path))


def test_missing_folder_gets_a_clear_error():
    with pytest.raises(FileNotFoundError, match="RLHF_IMDB_DIR"):
        load_imdb("train", source="/no/such/imdb/folder")


def test_clean_review_removes_html_breaks():
    assert clean_review("Great.<br /><br />Loved it.<br/>Yes<BR>") == "Great. Loved it. Yes"


def test_filter_keeps_only_long_reviews():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["a" * 200, "b" * 201 + "<br /><br />c"], "label": [0, 1]})
    out = filter_and_clean(ds, 200)
    assert out["text"] == ["b" * 201 + " c"]


def test_prompt_lengths_are_seeded_and_in_range():
    a = prompt_lengths(1000, 2, 8, seed=3)
    assert a.min() == 2 and a.max() == 8
    assert (a == prompt_lengths(1000, 2, 8, seed=3)).all()
    assert not (a == prompt_lengths(1000, 2, 8, seed=4)).all()
    with pytest.raises(ValueError):
        prompt_lengths(3, 5, 2, seed=0)


def test_prompts_are_token_prefixes(fast_world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(fast_world.tokenizer)
    texts = ["I watched this movie last night with my whole family and we loved it"] * 20
    prompts = make_prompts(texts, tok, 2, 8, seed=0)
    for p, text in zip(prompts, texts):
        assert 2 <= len(p["input_ids"]) <= 8
        assert text.startswith(p["query"])
        assert tok(text, add_special_tokens=False)["input_ids"][: len(p["input_ids"])] == p["input_ids"]


def test_prompt_sets_are_cached_by_data_tokenizer_and_settings(fast_world, monkeypatch, tmp_path):
    """The cache returns exactly what `make_prompts` computes; a damaged file is recomputed, not trusted."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    import rlhf_helpers.data as data

    monkeypatch.delenv("RLHF_IMDB_DIR", raising=False)
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path))
    tok = AutoTokenizer.from_pretrained(fast_world.tokenizer)
    profile = get_profile("smoke")
    texts = list(filter_and_clean(load_imdb("train", profile), profile.min_review_chars)["text"])
    expected = Dataset.from_list(make_prompts(texts, tok, profile.prompt_min_tokens, profile.prompt_max_tokens, 3))

    first = data.build_prompt_dataset(profile, tok, seed=3)
    files = list((tmp_path / "prompts").glob("*.json"))
    assert first[:] == expected[:] and first.features == expected.features and len(files) == 1

    def no_recompute(*args, **kwargs):
        raise AssertionError("the prompts were recomputed although their cache file is whole")

    monkeypatch.setattr(data, "make_prompts", no_recompute)
    tok("a text long enough to be cut", truncation=True, max_length=2)  # changes the backend's truncation state
    assert data.build_prompt_dataset(profile, tok, seed=3)[:] == expected[:]
    monkeypatch.undo()
    monkeypatch.delenv("RLHF_IMDB_DIR", raising=False)
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path))

    data.build_prompt_dataset(profile, tok, seed=4)  # another seed: other prompt lengths, another file
    assert len(list((tmp_path / "prompts").glob("*.json"))) == 2
    files[0].write_text(files[0].read_text()[:100])  # a half-written or damaged file
    assert data.build_prompt_dataset(profile, tok, seed=3)[:] == expected[:]
    assert data._read_cached_prompts(files[0], len(expected)) is not None  # rewritten whole
    tok.clean_up_tokenization_spaces = not tok.clean_up_tokenization_spaces  # decodes differently: its own key
    assert data._prompt_cache_file(filter_and_clean(load_imdb("train", profile), profile.min_review_chars), tok,
                                   profile.prompt_min_tokens, profile.prompt_max_tokens, 3) != files[0]


def test_heldout_prompts_are_fixed_and_from_test_split(fast_world, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.delenv("RLHF_IMDB_DIR", raising=False)
    tok = AutoTokenizer.from_pretrained(fast_world.tokenizer)
    profile = get_profile("smoke")
    a, b = heldout_prompts(profile, tok, n=64), heldout_prompts(profile, tok, n=64)
    assert a == b and len(a) == 64
    test_texts = {clean_review(t) for t in load_imdb("test", profile)["text"]}
    assert all(any(t.startswith(q) for t in test_texts) for q in a.queries[:10])
    with pytest.raises(ValueError, match="held-out"):
        heldout_prompts(profile, tok, n=10**6)


def test_real_profiles_ask_for_at_least_256_heldout_prompts():
    assert get_profile("gpu").n_eval_prompts >= 256 and get_profile("cpu").n_eval_prompts >= 256


def test_relative_env_typo_is_a_missing_folder_not_a_hub_id(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLHF_IMDB_DIR", "data/imbd")  # one slash: looks like a hub id "owner/name"
    with pytest.raises(FileNotFoundError, match="RLHF_IMDB_DIR='data/imbd' is not a folder"):
        load_imdb("test", get_profile("cpu"))


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype="int64")}), "has no rows"),
    (pd.DataFrame({"text": ["x" * 250, None], "label": [1, 0]}), "1 row\\(s\\) whose text is null"),
])
def test_empty_or_null_parquet_gives_a_clear_error(tmp_path, frame, message):
    frame.to_parquet(tmp_path / "test.parquet")
    with pytest.raises(ValueError, match=message):
        load_imdb("test", source=str(tmp_path))
