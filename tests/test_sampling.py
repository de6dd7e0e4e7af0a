"""Sampling and scoring responses: the forward pass agrees with what generate() sampled from."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_helpers.models import prepare_tokenizer
from rlhf_helpers.ppo import logprobs_from_logits
from rlhf_helpers.sampling import cut_response, left_pad, pack, response_logits, sample_responses

PROMPTS = ["I watched this movie", "The", "What a great film, the acting was", "Bad"]


@pytest.fixture(scope="module")
def policy_and_tokenizer(fast_world):
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    return AutoModelForCausalLM.from_pretrained(fast_world.policy).eval(), tok


def _ids(tok):
    return [torch.tensor(tok(p)["input_ids"]) for p in PROMPTS]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_forward_logprobs_equal_generate_scores(policy_and_tokenizer, temperature):
    policy, tok = policy_and_tokenizer
    ids, mask = left_pad(_ids(tok), tok.pad_token_id)
    torch.manual_seed(0)
    out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                          temperature=temperature, max_new_tokens=6, pad_token_id=tok.pad_token_id,
                          output_scores=True, return_dict_in_generate=True)
    generated = out.sequences[:, ids.shape[1]:]
    sampled_from = torch.log_softmax(torch.stack(out.scores, 1), -1).gather(-1, generated[..., None])[..., 0]
    batch = pack(_ids(tok), list(generated), tok.pad_token_id)
    logits, _ = response_logits(policy, batch)
    ours = logprobs_from_logits(logits, batch.response_ids, temperature)
    torch.testing.assert_close(ours, sampled_from, atol=1e-4, rtol=0)
    # The two pitfalls: forgetting position ids with left padding, forgetting the temperature.
    no_pos = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    no_pos = logprobs_from_logits(no_pos[:, batch.query_len - 1:-1], batch.response_ids, temperature)
    assert (no_pos - sampled_from).abs().max() > 1e-2
    if temperature != 1.0:
        assert (logprobs_from_logits(logits, batch.response_ids) - sampled_from).abs().max() > 1e-2


def test_pack_layout():
    batch = pack([torch.tensor([5, 6, 7]), torch.tensor([8])], [torch.tensor([1]), torch.tensor([2, 3, 4])], 0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 1, 0, 0], [0, 0, 8, 2, 3, 4]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 3, 3], [0, 0, 0, 1, 2, 3]]
    assert batch.response_mask.tolist() == [[1, 0, 0], [1, 1, 1]] and batch.query_len == 3


def test_cut_response_stops_after_first_eos():
    assert cut_response(torch.tensor([4, 5, 9, 6, 9]), 4, eos_id=9).tolist() == [4, 5, 9]
    assert cut_response(torch.tensor([4, 5, 6, 7, 8]), 3, eos_id=9).tolist() == [4, 5, 6]


def test_sample_responses_is_seeded_bounded_and_leaves_global_rng(policy_and_tokenizer):
    policy, tok = policy_and_tokenizer
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = sample_responses(policy, tok, _ids(tok) * 8, 4, 16, batch_size=5, seed=7)
    assert torch.rand(1) == expected_next, "a seeded evaluation must not move the global random state"
    b = sample_responses(policy, tok, _ids(tok) * 8, 4, 16, batch_size=5, seed=7)
    c = sample_responses(policy, tok, _ids(tok) * 8, 4, 16, batch_size=5, seed=8)
    assert a.responses == b.responses, "same seed and batch size, same samples"
    assert a.responses != c.responses
    assert all(len(r) <= 16 for r in a.response_ids)
    assert all(len(r) >= 4 or r[-1] == tok.eos_token_id for r in a.response_ids)
    assert a.queries[:4] == PROMPTS and a.texts[0].startswith(PROMPTS[0])


def test_sample_responses_rejects_bad_lengths(policy_and_tokenizer):
    policy, tok = policy_and_tokenizer
    with pytest.raises(ValueError, match="gen_min"):
        sample_responses(policy, tok, _ids(tok), 5, 2)
    with pytest.raises(ValueError, match="at least one token"):
        sample_responses(policy, tok, [torch.tensor([], dtype=torch.long)], 2, 4)
