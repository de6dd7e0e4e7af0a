"""IMDB for the course: loading, the classic filter and cleanup, prompts, and the held-out prompt set.

Where the data comes from, in order:
1. ``RLHF_IMDB_DIR`` (any profile): a local copy in the hub's parquet layout
   (``train.parquet``, ``test.parquet``, ``unsupervised.parquet``; columns ``text``, ``label``);
2. the ``smoke`` profile without it: the review fixture shipped in ``rlhf_helpers/fixtures``;
3. otherwise the hub id ``stanfordnlp/imdb``.
Each path gives the same features: ``text`` (string) and ``label`` (ClassLabel ``neg``/``pos``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .faults import DataFileError, MissingPathError, write_text_atomic
from .fixture import FIXTURE_DIR
from .hub import ensure_available
from .profiles import Profile

IMDB_DIR_ENV = "RLHF_IMDB_DIR"
SPLITS = ("train", "test", "unsupervised")
HELDOUT_SEED = 1234


CACHE_ENV = "RLHF_CACHE_DIR"
"""Where the course caches what it builds: the offline world (`offline.py`) and tokenized prompts."""


def cache_root() -> Path:
    """`$RLHF_CACHE_DIR`, else ~/.cache/rlhf-course."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rlhf-course")


def imdb_source(profile: Profile | None = None) -> str:
    """Where IMDB is read from: a local folder (env or fixture) or a hub id."""
    local = os.environ.get(IMDB_DIR_ENV)
    if local:
        return local
    if profile is not None and profile.offline:
        return str(FIXTURE_DIR)
    return profile.dataset if profile is not None else "stanfordnlp/imdb"


@contextlib.contextmanager
def _no_progress_bars():
    """datasets draws a bar for every split it generates, casts, filters and maps: seconds of work on IMDB, and
    four lines of noise in a notebook. Off inside the block, as it was afterwards."""
    from datasets.utils import logging as datasets_logging

    enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            datasets_logging.enable_progress_bar()


def _features():
    from datasets import ClassLabel, Features, Value

    return Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})


def check_parquet_split(path: Path, split: str, folder: str) -> None:
    """Raise a message naming the file and the fix unless `path` is a readable parquet file with rows and the
    columns text and label. Reads only the file's footer (milliseconds), so it runs before anything slow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"{IMDB_DIR_ENV}={folder}" if os.environ.get(IMDB_DIR_ENV) == folder else f"the IMDB folder {folder}"
    if not path.is_file():
        present = sorted(p.name for p in Path(folder).glob("*.parquet"))
        raise MissingPathError(
            f"IMDB folder {folder} has no {split}.parquet (found: {present or 'no parquet files'}). "
            f"Expected the hub's layout: {', '.join(s + '.parquet' for s in SPLITS)}. "
            f"Fix {IMDB_DIR_ENV} or unset it to use the hub (or the fixture in the smoke profile).")
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataFileError(
            f"{path} ({where}) is not a readable parquet file ({error}). It may be truncated by an interrupted "
            f"download or copy: replace it with IMDB's {split} split in the hub's parquet layout, or unset "
            f"{IMDB_DIR_ENV}.") from None
    missing = {"text", "label"} - set(meta.schema.names)
    if missing:
        raise DataFileError(f"{path} ({where}) lacks column(s) {sorted(missing)} (it has {meta.schema.names}); "
                            f"IMDB parquet has text and label.")
    if meta.num_rows == 0:
        raise DataFileError(f"{path} has no rows. Replace it with the IMDB {split} split ({IMDB_DIR_ENV}).")


def _check_env_folder(source: str) -> None:
    """RLHF_IMDB_DIR, when it is the source, must be a folder."""
    from_env = os.environ.get(IMDB_DIR_ENV)
    if from_env and source == from_env and not os.path.isdir(source):
        raise MissingPathError(
            f"{IMDB_DIR_ENV}={from_env!r} is not a folder (resolved to {os.path.abspath(from_env)}). Point it at a "
            f"folder holding train.parquet and test.parquet, or unset it to use the hub (or the fixture in smoke).")


def check_imdb_source(profile: Profile | None = None, splits: tuple[str, ...] = ("train", "test")) -> None:
    """Before a run loads anything: a local IMDB folder (RLHF_IMDB_DIR) holds readable `splits`."""
    source = imdb_source(profile)
    _check_env_folder(source)
    if os.path.isdir(source):
        for split in splits:
            check_parquet_split(Path(source) / f"{split}.parquet", split, source)


def load_imdb(split: str = "train", profile: Profile | None = None, source: str | None = None):
    """Load one IMDB split as a `datasets.Dataset` with features text / label(neg, pos).

    The unsupervised split has label -1, which a ClassLabel cannot hold, so it keeps an int label.
    """
    from datasets import load_dataset

    if split not in SPLITS:
        raise ValueError(f"Unknown IMDB split {split!r}; choose one of {SPLITS}.")
    source = source or imdb_source(profile)
    _check_env_folder(source)
    if os.path.isdir(source):
        path = Path(source) / f"{split}.parquet"
        check_parquet_split(path, split, source)
        with _no_progress_bars():
            ds = load_dataset("parquet", data_files={split: str(path)}, split=split)
        nulls = sum(t is None for t in ds[:]["text"])  # one batch read: a row-by-row `ds["text"]` loop takes 0.5 s
        if nulls:
            raise DataFileError(f"{path} has {nulls} row(s) whose text is null; IMDB has none. Drop them (e.g. "
                             f"pandas: df.dropna(subset=['text'])) or re-export the split.")
        if split != "unsupervised":
            with _no_progress_bars():
                ds = ds.select_columns(["text", "label"]).cast(_features())
        return ds
    if os.sep in source and not source.count("/") == 1:
        raise MissingPathError(f"IMDB folder {source!r} does not exist. Fix {IMDB_DIR_ENV}.")
    ensure_available(source, repo_type="dataset")
    with _no_progress_bars():
        return load_dataset(source, split=split)


_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")


def clean_review(text: str) -> str:
    """Replace the raw HTML line breaks (``<br /><br />``) with spaces and squeeze runs of spaces."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def filter_and_clean(ds, min_chars: int = 200):
    """The classic notebook's filter (reviews longer than `min_chars`), then `clean_review`."""
    with _no_progress_bars():
        ds = ds.filter(lambda t: len(t) > min_chars, input_columns="text")
        return ds.map(lambda t: {"text": clean_review(t)}, input_columns="text")


def prompt_lengths(n: int, min_tokens: int, max_tokens: int, seed: int) -> np.ndarray:
    """Seeded prompt lengths, uniform in [min_tokens, max_tokens] (the classic notebook's `LengthSampler`)."""
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"Need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}.")
    return np.random.default_rng(seed).integers(min_tokens, max_tokens + 1, size=n)


def make_prompts(texts: list[str], tokenizer, min_tokens: int = 2, max_tokens: int = 8,
                 seed: int = 0) -> list[dict]:
    """Cut each text to its first k tokens, k seeded per position. Returns dicts with query/input_ids."""
    lengths = prompt_lengths(len(texts), min_tokens, max_tokens, seed)
    # A prefix of ~40 characters per token is plenty; avoids tokenizing whole reviews. Truncating to max_tokens keeps
    # exactly the tokens a prompt can use (and no "longer than the maximum sequence length" warning).
    heads = [t[: 40 * max_tokens] for t in texts]
    ids = tokenizer(heads, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    prompts = []
    for text_ids, k in zip(ids, lengths):
        k = min(int(k), len(text_ids))
        prompts.append({"query": tokenizer.decode(text_ids[:k]), "input_ids": list(text_ids[:k])})
    return prompts


PROMPT_CACHE_VERSION = 1
"""Bump when `make_prompts` changes what it returns: cached prompt sets of older versions are then not read."""


def _tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of everything that decides `make_prompts`' output for this tokenizer, or None (slow tokenizers).

    The backend's truncation and padding settings are left out: calling the tokenizer with `truncation=True`
    changes them, and they do not change which tokens a text gets."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    state = json.loads(backend.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    python_side = [type(tokenizer).__name__, getattr(tokenizer, "clean_up_tokenization_spaces", None)]
    return hashlib.sha256(json.dumps([state, python_side], sort_keys=True).encode()).hexdigest()


def _prompt_cache_file(ds, tokenizer, min_tokens: int, max_tokens: int, seed: int) -> Path | None:
    """Where the prompts of this data, tokenizer and settings are cached, or None when they cannot be identified.
    `ds._fingerprint` is datasets' own identity of the loaded, filtered and cleaned split (it is what lets
    datasets reuse its cache of `filter_and_clean`)."""
    tokenizer_id = _tokenizer_fingerprint(tokenizer)
    data_id = getattr(ds, "_fingerprint", None)
    if tokenizer_id is None or data_id is None:
        return None
    key = json.dumps([PROMPT_CACHE_VERSION, data_id, len(ds), tokenizer_id, min_tokens, max_tokens, seed])
    return cache_root() / "prompts" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _read_cached_prompts(path: Path, rows: int) -> dict | None:
    """The cached columns if the file is whole and has `rows` prompts; None otherwise (then they are recomputed)."""
    try:
        cached = json.loads(path.read_text())
        if len(cached["query"]) == len(cached["input_ids"]) == rows:
            return {"query": cached["query"], "input_ids": cached["input_ids"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_cached_prompts(path: Path, columns: dict) -> None:
    """Write atomically (`faults.write_text_atomic`: a reader never sees half a file). A cache that cannot be
    written is skipped: it only saves time."""
    with contextlib.suppress(OSError):
        write_text_atomic(path, json.dumps(columns))


def build_prompt_dataset(profile: Profile, tokenizer, split: str = "train", seed: int = 0):
    """Training prompts: filtered, cleaned reviews of `split` cut to 2-8 tokens (profile's range).

    Tokenizing 25,000 reviews takes about 3 s, and every run and notebook needs the same prompts, so they are
    cached under ``$RLHF_CACHE_DIR/prompts``, keyed by the data, the tokenizer and the settings."""
    from datasets import Dataset

    ds = filter_and_clean(load_imdb(split, profile), profile.min_review_chars)
    cache = _prompt_cache_file(ds, tokenizer, profile.prompt_min_tokens, profile.prompt_max_tokens, seed)
    columns = _read_cached_prompts(cache, len(ds)) if cache is not None and cache.is_file() else None
    if columns is None:
        prompts = make_prompts(ds[:]["text"], tokenizer, profile.prompt_min_tokens, profile.prompt_max_tokens,
                               seed=seed)
        columns = {"query": [p["query"] for p in prompts], "input_ids": [p["input_ids"] for p in prompts]}
        if cache is not None:
            _write_cached_prompts(cache, columns)
    return Dataset.from_dict(columns)


@dataclass(frozen=True)
class HeldoutPrompts:
    """The fixed evaluation prompts: the same for every notebook, run and algorithm."""

    queries: list[str]
    input_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.queries)


def heldout_reviews(profile: Profile, n: int | None = None, seed: int = HELDOUT_SEED) -> list[str]:
    """The `n` (default `profile.n_eval_prompts`) seeded **test** reviews the held-out prompts are cut from, in the
    prompts' order (`sft.heldout_continuations` continues them)."""
    n = n or profile.n_eval_prompts
    ds = filter_and_clean(load_imdb("test", profile), profile.min_review_chars)
    if n > len(ds):
        raise ValueError(f"Asked for {n} held-out prompts but the test split has only {len(ds)} reviews.")
    return ds.shuffle(seed=seed).select(range(n))[:]["text"]


def heldout_prompts(profile: Profile, tokenizer, n: int | None = None,
                    seed: int = HELDOUT_SEED) -> HeldoutPrompts:
    """`n` (default `profile.n_eval_prompts`) seeded prompts from the **test** split, never trained on."""
    prompts = make_prompts(heldout_reviews(profile, n, seed), tokenizer, profile.prompt_min_tokens,
                           profile.prompt_max_tokens, seed=seed)
    return HeldoutPrompts(queries=[p["query"] for p in prompts], input_ids=[p["input_ids"] for p in prompts])
