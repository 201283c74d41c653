"""Chat-template encoding, prompt masking, truncation reporting, and padding-free batches that never mix examples."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.data.encoding import IGNORE, encode_row, encode_rows, padded_collator, padding_free_collator


@pytest.fixture(scope="module")
def tok(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


def test_row_ends_with_trained_eos_and_masks_prompt(tok):
    ids, labels = encode_row(tok, "Is the sky blue?", "yes. It scatters blue light.", mask_prompt=True)
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
    answer_ids = tok("yes. It scatters blue light.", add_special_tokens=False)["input_ids"]
    trained = [t for t in labels if t != IGNORE]
    assert trained == answer_ids + [tok.eos_token_id]
    assert tok.decode(ids).count("Is the sky blue?") == 1


def test_unmasked_row_trains_every_token(tok):
    ids, labels = encode_row(tok, "Q?", "no", mask_prompt=False)
    assert labels == ids


def test_answer_only_rows(tok):
    ids, labels = encode_row(tok, None, "maybe", mask_prompt=True)
    assert [t for t in labels if t != IGNORE] == tok("maybe", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert "user" not in tok.decode(ids)


def test_truncation_shortens_the_prompt_keeps_the_answer_and_is_reported(tok):
    enc = encode_rows(
        tok,
        ["short", "Question? " + "long " * 400],
        ["yes", "no. Because."],
        max_seq_length=64,
        mask_prompt=True,
    )
    assert enc.truncated_rows == [1] and enc.answer_cut_rows == []
    ids, labels = enc.examples[1]["input_ids"], enc.examples[1]["labels"]
    assert len(ids) <= 64
    assert tok.decode([t for t in labels if t != IGNORE]) == "no. Because.<|im_end|>"
    assert "Question?" in tok.decode(ids)
    assert "1 rows truncated to max_seq_length=64" in enc.summary()


def test_answer_longer_than_the_limit_is_cut_and_reported(tok):
    enc = encode_rows(tok, ["q"], ["word " * 200], max_seq_length=32)
    assert enc.answer_cut_rows == [0] and len(enc.examples[0]["input_ids"]) == 32
    assert "1 answers were cut too" in enc.summary()


def test_padding_free_batch_matches_one_by_one(tiny_model_dir, tok):
    """Examples packed into one row get exactly the logits they get alone: no attention across examples."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.config.use_cache = False
    enc = encode_rows(tok, ["first question?", "a second, longer question here?"], ["yes", "no, not at all"], 128)
    batch = padding_free_collator()(enc.examples)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for ex in enc.examples:
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, atol=1e-4, rtol=1e-4)
            start += n
    # the first token of every example is not a target of the previous one
    assert (batch["labels"][0, [0, len(enc.examples[0]["input_ids"])]] == IGNORE).all()


def test_padded_batch_pads_labels_with_ignore(tok):
    enc = encode_rows(tok, ["a?", "a much longer question?"], ["yes", "no"], 128)
    batch = padded_collator(tok)(enc.examples)
    short = len(enc.examples[0]["input_ids"])
    assert (batch["labels"][0, short:] == IGNORE).all()
    assert (batch["attention_mask"][0, short:] == 0).all()
