import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from rlhf_helpers.reward import SentimentReward, positive_label_index

def pipeline_positive_scores(classifier, texts) -> list[float]:
    """An independent reference: the POSITIVE score through the pipeline's own API (all labels, raw logits)."""
    outputs = classifier(list(texts), top_k=None, function_to_apply="none", truncation=True)
    scores = []
    for row in outputs:
        positive = [o["score"] for o in row if o["label"].lower() == "positive"]
        if not positive:
            raise ValueError(f"labels {[o['label'] for o in row]}: none is POSITIVE; pass positive_label=...")
        scores.append(positive[0])
    return scores


TEXTS = ["I watched this movie and it was wonderful", "The acting was terrible and boring",
         "A film", "What a superb, moving story. 10/10", "Dreadful. Avoid it."]


@pytest.fixture(scope="module")
def classifier(fast_world):
    return pipeline("sentiment-analysis", model=str(fast_world.classifier), device="cpu")


def _swapped_copy(path, out):
    """The same classifier with its two outputs stored in the opposite order (label names follow)."""
    model = AutoModelForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = {0: "POSITIVE", 1: "NEGATIVE"}
    model.config.label2id = {"POSITIVE": 0, "NEGATIVE": 1}
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    return out


def test_label_is_chosen_by_name_not_index(fast_world, classifier, tmp_path):
    swapped = pipeline("sentiment-analysis", model=str(_swapped_copy(fast_world.classifier, tmp_path)),
                       device="cpu")
    assert positive_label_index(classifier.model.config) == 1
    assert positive_label_index(swapped.model.config) == 0
    expected = SentimentReward(classifier)(TEXTS)
    torch.testing.assert_close(SentimentReward(swapped)(TEXTS), expected)
    # Reading a fixed index is the bug: it returns the NEGATIVE logit for the swapped model.
    enc = swapped.tokenizer(TEXTS, padding=True, return_tensors="pt")
    by_index = swapped.model(**enc).logits[:, 1]
    assert not torch.allclose(by_index, expected, atol=1e-4)


def test_reward_matches_the_pipeline_by_label_name(classifier):
    ours = SentimentReward(classifier, batch_size=2)(TEXTS)
    theirs = torch.tensor(pipeline_positive_scores(classifier, TEXTS))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_batching_does_not_change_scores(classifier):
    one = torch.cat([SentimentReward(classifier)([t]) for t in TEXTS])
    torch.testing.assert_close(SentimentReward(classifier, batch_size=3)(TEXTS), one, atol=1e-5, rtol=1e-5)


def test_long_texts_are_truncated_or_rejected(classifier):
    reward = SentimentReward(classifier)
    long_text = "great film " * 2000
    assert reward([long_text]).shape == (1,)  # truncated to the classifier's maximum length
    with pytest.raises(ValueError, match=r"classifier reads at most \d+.*truncation=True"):
        SentimentReward(classifier, truncation=False)(["fine", long_text])


@pytest.mark.parametrize("bad, error, message", [
    ([], ValueError, "non-empty list"),
    (["good", ""], ValueError, "Text 1 is empty"),
    (["good", "   "], ValueError, "Text 1 is empty"),
    (["good", 3], TypeError, "Text 1 is a int.*batch_decode"),
    ([None], TypeError, "Text 0 is a NoneType"),
])
def test_bad_texts_get_clear_errors(classifier, bad, error, message):
    with pytest.raises(error, match=message):
        SentimentReward(classifier)(bad)


def test_classifier_without_positive_label(fast_world, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(fast_world.classifier)
    model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(fast_world.classifier).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="none is named 'POSITIVE'.*positive_label="):
        SentimentReward(pipeline("sentiment-analysis", model=str(tmp_path), device="cpu"))
    # Naming the positive class explicitly is the fix.
    assert SentimentReward(pipeline("sentiment-analysis", model=str(tmp_path), device="cpu"),
                           positive_label="LABEL_1").positive_index == 1


def test_pipeline_scores_without_positive_label_name_the_fix(fast_world, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(fast_world.classifier)
    model.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    model.config.label2id = {"LABEL_0": 0, "LABEL_1": 1}
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(fast_world.classifier).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="positive_label="):
        SentimentReward(pipeline("sentiment-analysis", model=str(tmp_path), device="cpu"))
