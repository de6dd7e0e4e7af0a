"""A small labelled review corpus that the project writes itself and ships as a fixture.

It stands in for IMDB when no local copy is configured (``RLHF_IMDB_DIR``), so the tests and the
``smoke`` profile work on a fresh clone anywhere. Same layout as the hub's parquet export of
``stanfordnlp/imdb``: ``train.parquet``, ``test.parquet``, ``unsupervised.parquet`` with columns
``text`` (str) and ``label`` (0 = neg, 1 = pos, -1 = unlabelled). The reviews are template-made,
deterministic, and contain ``<br /><br />`` breaks like the real data.

Regenerate with ``python -m rlhf_helpers.fixture`` (a test checks the shipped files match).
"""

from __future__ import annotations

import random
from pathlib import Path

FIXTURE_DIR = Path(__file__).parent / "fixtures"
SPLIT_SIZES = {"train": 2000, "test": 1000, "unsupervised": 500}
SEED = 20231

_SUBJECTS = ["this movie", "the film", "this picture", "the story", "this thriller", "the comedy",
             "this drama", "the sequel", "this documentary", "the remake", "this western", "the musical"]
_OPENERS = ["I watched {s} last night", "I saw {s} with my family", "I rented {s} on a whim",
            "My friends told me to see {s}", "I finally caught {s} on TV", "I went to see {s} at the cinema",
            "I had been waiting for {s} for years", "I picked up {s} at the video store"]
_ASPECTS = ["acting", "script", "direction", "music", "cinematography", "plot", "dialogue", "ending",
            "cast", "pacing", "soundtrack", "editing", "lead actor", "villain", "camera work"]
_POS_ADJ = ["wonderful", "brilliant", "superb", "excellent", "beautiful", "moving", "delightful",
            "outstanding", "great", "touching", "gripping", "charming", "fantastic", "perfect", "funny"]
_NEG_ADJ = ["terrible", "awful", "boring", "dreadful", "weak", "pointless", "dull", "horrible",
            "lame", "stupid", "painful", "bad", "poor", "annoying", "clumsy"]
_POS_SENT = ["The {a} was {j} and the {b} was {k}.", "I loved the {a}; it was simply {j}.",
             "Everything about the {a} felt {j}.", "The {a} is {j}, and the {b} is even better.",
             "What a {j} {a}!", "I was impressed by the {j} {a}.", "The {b} made me smile, {k} work."]
_NEG_SENT = ["The {a} was {j} and the {b} was {k}.", "I hated the {a}; it was simply {j}.",
             "Everything about the {a} felt {j}.", "The {a} is {j}, and the {b} is even worse.",
             "What a {j} {a}!", "I was disappointed by the {j} {a}.", "The {b} made me wince, {k} work."]
_NEUTRAL = ["It runs for about two hours.", "The film was shot in the summer.",
            "The director also made a short film before this one.", "Some scenes take place at night.",
            "There is a long scene in a train station.", "The lead actor is in almost every scene.",
            "It is based on a novel.", "The music was written for the film."]
_POS_END = ["I would recommend it to anyone. 9/10.", "A must see, one of the best this year.",
            "I will watch it again. Highly recommended.", "Go see it, you will not regret it. 10/10."]
_NEG_END = ["Avoid it. 2/10.", "A waste of time, one of the worst this year.",
            "I will never watch it again. Not recommended.", "Skip it, you will regret it. 1/10."]


def _review(rng: random.Random, label: int) -> str:
    adj, sents, ends = (_POS_ADJ, _POS_SENT, _POS_END) if label == 1 else (_NEG_ADJ, _NEG_SENT, _NEG_END)
    parts = [rng.choice(_OPENERS).format(s=rng.choice(_SUBJECTS)) + "."]
    for _ in range(rng.randint(3, 6)):
        if rng.random() < 0.25:
            parts.append(rng.choice(_NEUTRAL))
        else:
            a, b = rng.sample(_ASPECTS, 2)
            j, k = rng.sample(adj, 2)
            parts.append(rng.choice(sents).format(a=a, b=b, j=j, k=k))
    parts.append(rng.choice(ends))
    text = " ".join(parts)
    # Real IMDB reviews contain raw HTML line breaks; keep that quirk so the cleanup is exercised.
    cut = text.find(". ", len(text) // 2)
    if cut > 0:
        text = text[: cut + 1] + "<br /><br />" + text[cut + 2:]
    return text


def generate_split(name: str, n: int, seed: int = SEED) -> dict[str, list]:
    """Deterministic labelled (or, for `unsupervised`, label -1) template reviews, half of each class."""
    rng = random.Random(f"{seed}-{name}")
    texts, labels = [], []
    for i in range(n):
        label = -1 if name == "unsupervised" else i % 2
        text = _review(rng, label if label >= 0 else rng.randint(0, 1))
        while len(text) <= 200:  # every fixture review passes the course's >200-character filter
            text += " " + rng.choice(_NEUTRAL)
        texts.append(text)
        labels.append(label)
    # Sorted by label like the local IMDB copy, so loaders must shuffle.
    order = sorted(range(n), key=lambda i: labels[i])
    return {"text": [texts[i] for i in order], "label": [labels[i] for i in order]}


def write_fixture(directory: Path | str = FIXTURE_DIR) -> Path:
    import pandas as pd

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in SPLIT_SIZES.items():
        frame = pd.DataFrame(generate_split(split, n))
        frame["label"] = frame["label"].astype("int64")
        frame.to_parquet(directory / f"{split}.parquet", index=False)
    return directory


if __name__ == "__main__":
    print(f"wrote {write_fixture()}")
