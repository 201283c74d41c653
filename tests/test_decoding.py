"""Greedy decoding in slots with rows coming and going (ftkit.results.decoding), on the bundled SmolLM2."""

from __future__ import annotations

import pytest

PROMPTS = [
    "Is the sky blue? Explain briefly, then answer yes or no after 'Answer:'.",
    "Does aspirin prevent heart attacks in every adult? Explain in one sentence, then write 'Answer:' and yes, "
    "no or maybe.",
    "Is water wet?",
    "Four, the last one?",
    "Name three colours of the rainbow, then say whether the rainbow has a fourth.",
]


@pytest.fixture(scope="module")
def bundled(bundled_model_dir):
    from ftkit.results.inference import load_for_inference

    return load_for_inference(str(bundled_model_dir), device="cpu")


@pytest.fixture(autouse=True)
def slots_as_asked(monkeypatch):
    """batch_size slots exactly (else as many rows as fit the cache budget share a batch: all of these)."""
    monkeypatch.setattr("ftkit.results.decoding.CACHE_BYTES", 0)


def _decode(model, tok, readout, batch_size, max_new_tokens=12, stop=lambda g: False):
    from ftkit.results.decoding import decode_rows
    from ftkit.results.inference import contexts

    return decode_rows(
        model,
        contexts(tok, PROMPTS),
        max_new_tokens=max_new_tokens,
        eos_ids={tok.eos_token_id},
        pad_id=tok.pad_token_id,
        stop=stop,
        readout=readout,
        wanted=list(range(len(tok))),
        batch_size=batch_size,
    )


def test_decoded_rows_match_model_generate_and_a_fresh_pass_over_a_readout_context_that_differs_midway(bundled):
    import torch
    from transformers import GenerationConfig

    from ftkit.results.inference import contexts, left_pad, next_token_logprobs

    model, tok = bundled
    ctx = contexts(tok, PROMPTS)
    # read each row out after a context that keeps only the first 3 generated tokens and then says something else:
    # the cached tokens after those 3 must be masked out and the new ones fed at the right positions; it is longer
    # than the slots were planned for (context + max_new_tokens + 8), so the cache grows on the way
    other = tok(
        " In short, having weighed all that was said above, I would say that the answer is", add_special_tokens=False
    )["input_ids"]
    assert len(other) > 8 + 3
    targets = {}

    def readout(i, generated):
        targets[i] = ctx[i] + generated[:3] + other
        return targets[i]

    found = _decode(model, tok, readout, batch_size=3)  # 5 rows in 3 slots: two rows wait for a free slot
    ids, mask, _ = left_pad(ctx[:1], tok.pad_token_id, "cpu")
    cfg = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=[2])
    with torch.inference_mode():
        reference = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[0, ids.shape[1] :]
    assert found[0][0] == reference.tolist()  # greedy tokens as model.generate writes them
    fresh = next_token_logprobs(model, tok, [targets[i] for i in range(len(PROMPTS))], list(range(len(tok))), 1)
    for (_, logps), want in zip(found, fresh, strict=True):
        assert max(abs(a - b) for a, b in zip(logps, want, strict=True)) < 2e-3


def test_rows_that_end_early_leave_the_batch_without_changing_what_the_others_generate(bundled):
    from ftkit.results.inference import contexts

    model, tok = bundled
    ctx = contexts(tok, PROMPTS)

    def stop(generated):  # ends rows after different numbers of tokens, so they leave a shared batch one by one
        return len(generated) >= 2 + (generated[0] % 7)

    alone = _decode(model, tok, lambda i, g: ctx[i] + g, batch_size=1, stop=stop)
    together = _decode(model, tok, lambda i, g: ctx[i] + g, batch_size=len(PROMPTS), stop=stop)
    assert [g for g, _ in together] == [g for g, _ in alone]
    for (_, a), (_, b) in zip(together, alone, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 2e-3
    lengths = {len(g) for g, _ in together}
    assert len(lengths) > 1 and max(lengths) < 12  # rows really ended at different steps, before the budget


def test_decoding_refuses_a_budget_below_one_token(bundled):
    from ftkit.errors import UsageError

    model, tok = bundled
    with pytest.raises(UsageError, match="max_new_tokens must be >= 1, got 0"):
        _decode(model, tok, lambda i, g: g, batch_size=2, max_new_tokens=0)


def test_contexts_sharing_no_prefix_and_one_token_contexts_decode_as_each_does_alone(bundled):
    # the shared-prefix prefill must step aside: nothing shared here, and a context of one token keeps it for itself
    from ftkit.results.decoding import decode_rows

    model, tok = bundled
    ctx = [
        tok("Hello", add_special_tokens=False)["input_ids"],
        tok("The weather today", add_special_tokens=False)["input_ids"],
        tok("Hello there", add_special_tokens=False)["input_ids"],
    ]
    assert len(ctx[0]) == 1

    def run(rows, batch_size):
        return decode_rows(
            model,
            rows,
            max_new_tokens=6,
            eos_ids={tok.eos_token_id},
            pad_id=tok.pad_token_id,
            stop=lambda g: False,
            readout=lambda i, g: rows[i] + g,
            wanted=[0, 1, 2],
            batch_size=batch_size,
        )

    together = run(ctx, 2)
    for i, row in enumerate(ctx):
        (alone,) = run([row], 1)
        assert together[i][0] == alone[0]
        assert max(abs(a - b) for a, b in zip(together[i][1], alone[1], strict=True)) < 2e-3
